"""The command line: every command has help and is documented in the README, and a
user's mistake is one line on stderr, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.cli import COMMANDS, build_parser, main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_in_the_readme(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as e:
        code = e.code
    assert code == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) >= 3
    assert f"sensorml {command}" in README


def test_parser_lists_exactly_the_documented_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


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
