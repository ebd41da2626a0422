# sensorml — everything starts from a Python 3.11+ interpreter and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench soak fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip installs the pinned set from constraints.txt, then the project in editable mode.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,notebooks,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/sensorml demo --workdir build/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks

# The soak (not part of `make test`): simulator + gateway (+ sync) for SOAK_MINUTES.
SOAK_MINUTES ?= 60
soak: install
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES)

# Coverage-guided fuzzing (atheris) of the frame/CSV decoders and the map/config loaders.
FUZZ_RUNS ?= 200000
fuzz: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[fuzz]'
	$(BIN)/python -m benchmarks.fuzz --runs $(FUZZ_RUNS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
