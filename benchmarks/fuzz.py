"""Coverage-guided fuzzing with atheris (libFuzzer) of what the edge reads from outside:
the binary frame decoder, the CSV decoder, the register-map loader and the gateway config
loader. ``make fuzz`` (installs the ``fuzz`` extra) or ``python -m benchmarks.fuzz
[TARGET ...] --runs N``. Not in ``make test``: the suite fuzzes the same four with
hypothesis and seeded random inputs (tests/faults/test_bad_input.py).

The invariants checked on every input, a failure of which is a crash that libFuzzer
reports with the input that caused it:

- ``frames``: the input, cut into pieces the fuzzer chooses, never raises; every item out
  is a frame with 2-D samples or a message; a valid frame sent after the garbage (and a
  0x00 delimiter) is recovered intact;
- ``csv``: the same for text lines, with a valid 3-number line after a newline;
- ``regmap``: the input as a register-map file: it loads, or raises the package's
  ``ConfigError`` with one line that names the file;
- ``config``: the input as ``gateway.toml``: it loads, or raises ``ConfigError`` with one
  line that names the file.

Seeds: valid frames and lines, the example maps and configs (``sensorml examples``). Each
target runs in its own process (libFuzzer exits when done); the driver prints runs,
executions/s, coverage and crashes per target.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("frames", "csv", "regmap", "config")


# ------------------------------------------------------------------ targets
def _frames_target():  # noqa: ANN202
    import atheris
    import numpy as np

    with atheris.instrument_imports():
        from firmware_bridge.codec.frames import FrameDecoder, encode_frame

    good = np.arange(12, dtype=np.float32).reshape(4, 3)
    tail = b"\x00" + encode_frame(7, 7, good)

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        dec = FrameDecoder()
        out = []
        while fdp.remaining_bytes():
            out += dec.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 512)))
        for item in out:
            s = getattr(item, "samples", None)
            assert s is None or s.ndim == 2, item
        got = dec.feed(tail)
        frames = [f for f in got if getattr(f, "seq", None) == 7]
        assert frames and np.array_equal(frames[-1].samples, good), got

    return one


def _csv_target():  # noqa: ANN202
    import atheris
    import numpy as np

    with atheris.instrument_imports():
        from firmware_bridge.codec.csvlines import CsvDecoder

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        dec = CsvDecoder(("ax", "ay", "az"))
        while fdp.remaining_bytes():
            rows, _ = dec.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 256)))
            assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == 3
        rows, _ = dec.feed(b"\n1.5,-2.5,3.5\n")
        assert rows.shape[0] >= 1 and rows[-1].tolist() == [1.5, -2.5, 3.5], rows

    return one


def _loader_target(kind: str):  # noqa: ANN202
    import atheris

    with atheris.instrument_imports():
        if kind == "regmap":
            from firmware_bridge.errors import ConfigError
            from firmware_bridge.modbus.regmap import load_map as load
        else:
            from sensorml.config import load_config as load
            from sensorml.errors import ConfigError
    from sensorml.bundles.bundle import keygen
    from sensorml.examples import write_examples

    d = Path(tempfile.mkdtemp(prefix=f"fuzz_{kind}_"))
    write_examples(d)  # configs/ name ../maps/ and ../keys/ by relative path
    keygen(d / "keys")
    path = d / ("maps/map.toml" if kind == "regmap" else "configs/gateway.toml")

    def one(data: bytes) -> None:
        path.write_bytes(data)
        try:
            load(path)
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(str(path)), msg

    return one


def run_target(name: str, runs: int, max_len: int) -> None:
    """Inside the child: set libFuzzer up on ``name`` and fuzz (exits when done)."""
    import atheris

    one = {"frames": _frames_target, "csv": _csv_target,
           "regmap": lambda: _loader_target("regmap"),
           "config": lambda: _loader_target("config")}[name]()
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz_corpus_{name}_"))
    for i, seed in enumerate(_seeds(name)):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_len={max_len}", "-print_final_stats=1",
                   str(corpus)], one)
    atheris.Fuzz()


def _seeds(name: str) -> list[bytes]:
    import numpy as np

    if name == "frames":
        from firmware_bridge.codec.frames import encode_frame

        x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(16, 3)
        return [encode_frame(1, 0, x), encode_frame(2, 16, x) + encode_frame(3, 32, x), b"\x00"]
    if name == "csv":
        return [b"0.1,0.2,0.3\n1,2,3\n", b"# hello\n-1e3,nan,4\n", b"1,2\n"]
    from sensorml.examples import example_files

    folder = "maps/" if name == "regmap" else "configs/"
    return [f.read_bytes() for rel, f in example_files().items() if rel.startswith(folder)]


# ------------------------------------------------------------------ driver
def drive(targets: list[str], runs: int, max_len: int) -> int:
    print(f"{'target':8s} {'runs':>10s} {'exec/s':>9s} {'cov':>6s} {'ft':>7s} {'crashes':>8s} "
          f"{'s':>6s}", flush=True)
    failed = 0
    for name in targets:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--child", name,
                            "--runs", str(runs), "--max-len", str(max_len)],
                           capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": "0"})
        dt = time.monotonic() - t0
        err = r.stderr
        done = re.search(r"Done (\d+) runs", err)
        cov = re.findall(r"cov: (\d+) ft: (\d+)", err)
        eps = re.search(r"stat::average_exec_per_sec:\s+(\d+)", err)
        crashed = r.returncode != 0
        failed += crashed
        print(f"{name:8s} {done.group(1) if done else '-':>10s} "
              f"{eps.group(1) if eps else '-':>9s} {cov[-1][0] if cov else '-':>6s} "
              f"{cov[-1][1] if cov else '-':>7s} {int(crashed):8d} {dt:6.1f}", flush=True)
        if crashed:
            print(f"  {name}: exit status {r.returncode}; libFuzzer said:\n"
                  + "\n".join("    " + ln for ln in err.splitlines()[-30:]), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    p.add_argument("--runs", type=int, default=200_000, help="inputs per target (default 200000)")
    p.add_argument("--max-len", type=int, default=4096, help="largest input in bytes")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    unknown = [t for t in a.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target {unknown[0]!r} (choose from {', '.join(TARGETS)})")
    if a.child:
        run_target(a.child, a.runs, a.max_len)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: `make fuzz` installs it (the 'fuzz' extra)",
              file=sys.stderr)
        return 2
    return drive(list(a.targets) or list(TARGETS), a.runs, a.max_len)


if __name__ == "__main__":
    sys.exit(main())
