"""The command line: one parser tree whose every command has help and a row in the
README's command table; a user's mistake is one line on stderr, never a traceback;
``sensorml train`` without the ``[train]`` extra says so in one line; output into a closed
pipe ends quietly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.cli import COMMANDS, build_parser, main
from sensorml.cli.tree import walk

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

#: The fake for "the [train] extra is not installed": a meta-path finder, first on
#: sys.meta_path, that refuses the extra's modules as an absent package would (the venv
#: here has them installed, and uninstalling them would break every other test).
HIDE_TRAIN_EXTRA = """
import sys
class HideTrainExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sklearn", "scipy", "skl2onnx"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, HideTrainExtra())
"""


def command_paths() -> list[tuple[str, ...]]:
    """Every parser of the tree as its words: ("sensorml",), ("sensorml", "train", "fit"), ..."""
    return [tuple(p.prog.split()) for p in walk(build_parser())]


def leaf_paths() -> list[tuple[str, ...]]:
    return [tuple(p.prog.split()) for p in walk(build_parser())
            if p.get_default("fn") is not None]


def table_commands() -> list[str]:
    """The first cell of each row of the README's command table."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(sensorml [^`]*)`", section, re.M)


def run_cli(*args: str, prelude: str = "", **kw) -> subprocess.CompletedProcess:
    code = prelude + "\nimport sys\nfrom sensorml.cli import main\nsys.exit(main(sys.argv[1:]))"
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-c", code, *args], text=True, timeout=60, **kw)


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_readable_help(path, capsys):
    assert main([*path[1:], "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(path)}")
    assert len(out.strip().splitlines()) >= 3
    assert "``" not in out and ":mod:" not in out and ":func:" not in out  # no raw reST


@pytest.mark.parametrize("path", leaf_paths(), ids=" ".join)
def test_every_command_has_a_row_in_the_readme_table(path):
    words = " ".join(path)
    assert any(c == words or c.startswith(words + " ") for c in table_commands()), words


def test_the_table_documents_only_commands_that_exist():
    paths = {" ".join(p) for p in command_paths()}
    for cell in table_commands():
        words = cell.split()
        known = max((i for i in range(2, len(words) + 1) if " ".join(words[:i]) in paths),
                    default=0)
        assert known, f"README command table: {cell!r} is not a sensorml command"


def test_the_registry_is_the_tree():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [c.name for c in COMMANDS]
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)


def test_training_is_the_same_tree_as_sensorml_train():
    import argparse

    from training.cli import add_arguments

    def shape(parser, depth: int) -> list:
        return sorted((tuple(p.prog.split()[depth:]),
                       sorted(o for a in p._actions for o in a.option_strings))
                      for p in walk(parser))

    training = argparse.ArgumentParser(prog="training")
    add_arguments(training)
    train = next(p for p in walk(build_parser()) if p.prog == "sensorml train")
    assert shape(training, 1) == shape(train, 2)
    assert ("keygen",) not in [s[0] for s in shape(training, 1)]  # one keygen: sensorml keygen


def test_the_readme_simulator_command_line_parses_as_written(tmp_path):
    """The line the README starts with, for a second: it used to fail with
    "unrecognized arguments: --serial --format"."""
    link = tmp_path / "sim.pty"
    r = run_cli("simulate", "--serial", "--format", "frames", "--link", str(link),
                "--duration", "0.2s", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(f"format=frames link={link}")
    assert not link.exists()  # removed on exit


def test_a_missing_config_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "gateway", "--config",
                        str(tmp_path / "nope.toml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"sensorml gateway: error: {tmp_path / 'nope.toml'}: config file not found"


def test_a_bad_source_url_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text('device_id = "x"\n[source]\nurl = "sim://pump?rate=8000"\n')
    assert main(["check-config", str(cfg)]) == 0
    spec = json.loads(capsys.readouterr().out)["feature_spec"]
    assert spec["sample_rate"] == 8000 and spec["channels"] == ["ax", "ay", "az"]
    cfg.write_text('device_id = "x"\n[source]\nurl = "bogus://pump"\n')
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "source.url" in err[0] and "'bogus'" in err[0]


def test_the_control_port_stays_on_loopback_unless_asked(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    base = 'device_id = "x"\n[source]\nurl = "sim://pump"\n[metrics]\nhost = "0.0.0.0"\n'
    cfg.write_text(base)
    assert main(["check-config", str(cfg)]) == 2
    assert "metrics.host: '0.0.0.0' is not loopback" in capsys.readouterr().err
    cfg.write_text(base + "allow_remote = true\n")
    assert main(["check-config", str(cfg)]) == 0


@pytest.mark.parametrize("args", [
    ["train"], ["train", "--help"], ["train", "fit", "--help"], ["train", "evaluate", "--help"],
    ["train", "fit", "--table", "run.csv", "--out", "b"], ["train", "verify", "b"],
])
def test_train_without_the_extra_is_one_line_and_exit_2(args):
    """Fake: "the [train] extra is not installed" is HIDE_TRAIN_EXTRA, a meta-path finder
    that refuses sklearn, scipy and skl2onnx in the child process."""
    r = run_cli(*args, prelude=HIDE_TRAIN_EXTRA)
    assert r.returncode == 2
    assert r.stderr == ("sensorml train needs the [train] extra: pip install 'sensorml[train]' "
                        "(sklearn is not installed)\n")
    assert r.stdout == ""


def test_the_training_command_without_the_extra_is_one_line_too():
    """Fake: the extra's absence is HIDE_TRAIN_EXTRA (see above)."""
    code = HIDE_TRAIN_EXTRA + "\nfrom training.cli import main\nsys.exit(main(['--help']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("training needs the [train] extra: pip install 'sensorml[train]'")


def test_building_the_tree_imports_no_training_library_and_the_rest_works_without_it():
    """Fake: the extra's absence is HIDE_TRAIN_EXTRA (see above)."""
    code = HIDE_TRAIN_EXTRA + """
from sensorml.cli import build_parser, main
build_parser()
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("sklearn", "scipy", "skl2onnx", "onnx", "onnxruntime"))
assert heavy == [], heavy
assert main(["--help"]) == 0 and main(["simulate", "--help"]) == 0
assert main(["score", "--help"]) == 0 and main(["desired", "--help"]) == 0
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`sensorml check-config g.toml | head -1` once the reader has gone: no traceback."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('device_id = "x"\n[source]\nurl = "sim://pump"\n')
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write: every write is EPIPE
    try:
        p = run_cli("check-config", str(cfg), stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert p.returncode == 1
    assert p.stderr == ""


def test_status_piped_into_head_ends_quietly(tmp_path, procs, e2e):
    """The reported case, against a running gateway: `sensorml status --config g.toml | head -1`
    (shell pipe, real head) prints the first line and nothing on stderr; and into a reader
    that is already gone."""
    cfg = e2e.write_gateway_config(tmp_path, '[source]\nurl = "sim://pump?rate=8000"\n')
    procs.append(e2e.start_gateway(cfg))
    sh = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{sys.executable}" -m sensorml.cli status --config '
                       f'"{cfg}" | head -1'], capture_output=True, text=True, timeout=60)
    assert sh.stdout.startswith("device      test-pump") and len(sh.stdout.splitlines()) == 1
    assert sh.stderr == "" and sh.returncode in (0, 1)  # 1: the pipe closed before the rest
    r, w = os.pipe()
    os.close(r)
    try:
        p = run_cli("status", "--config", str(cfg), stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (1, "")


def test_the_desired_command_writes_a_file_redeploy_reads(tmp_path, capsys):
    from sensorml.bundles.desired import verify_desired
    from sensorml.bundles.signing import keygen

    priv, pub = keygen(tmp_path / "keys")
    cloud = tmp_path / "cloud"
    assert main(["desired", "--store", f"file://{cloud}", "--device", "pump-7", "--model",
                 "pump", "--version", "3", "--key", str(priv)]) == 0
    assert capsys.readouterr().out == "desired/pump-7.json: pump 3\n"
    d = verify_desired((cloud / "desired/pump-7.json").read_bytes(),
                       (cloud / "desired/pump-7.json.sig").read_bytes(), [pub],
                       where="desired/pump-7.json", expect_scope="device",
                       expect_target="pump-7")
    assert (d.model, d.version) == ("pump", "3")
    assert main(["desired", "--store", f"file://{cloud}", "--fleet", "pumps", "--model", "pump",
                 "--version", "3", "--key", str(tmp_path / "nokey")]) == 2
    assert capsys.readouterr().err.startswith("sensorml desired: error: ")
