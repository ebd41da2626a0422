"""The example configs (``sensorml examples DIR``) work against the simulator as written.

Each test writes the examples into a temporary folder with :func:`write_examples` (so
relative paths such as ``../keys`` land there) and changes only what must differ per
test run: the simulator's pty link path, its Modbus port and the metrics port (all 0 or
tmp_path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.bundles.bundle import keygen
from sensorml.errors import SensormlError
from sensorml.examples import example_files, write_examples

pytestmark = pytest.mark.timeout(120)
CONFIGS = sorted(rel.split("/")[1] for rel in example_files() if rel.startswith("configs/"))


def copy_example(tmp_path: Path, name: str, subst: dict[str, str]) -> Path:
    write_examples(tmp_path)
    keygen(tmp_path / "keys")
    cfg = tmp_path / "configs" / name
    text = cfg.read_text()
    for old, new in subst.items():
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)
    return cfg


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_examples_writes_configs_and_the_maps_they_name(tmp_path):
    r = run("sensorml.cli", "examples", str(tmp_path / "try"))
    assert r.returncode == 0, r.stderr
    written = [Path(line) for line in r.stdout.splitlines()]
    assert [p.relative_to(tmp_path / "try").as_posix() for p in written] == list(example_files())
    assert CONFIGS == ["modbus_pump.toml", "serial_vibration.toml"]
    cfg = tmp_path / "try" / "configs" / "modbus_pump.toml"
    assert 'map = "../maps/sim_pump.toml"' in cfg.read_text()
    assert (tmp_path / "try" / "maps" / "sim_pump.toml").is_file()


def test_examples_keeps_an_edited_file_unless_forced(tmp_path):
    cfg = write_examples(tmp_path)[0]
    assert write_examples(tmp_path) == write_examples(tmp_path)  # same bytes: fine, again
    cfg.write_text(cfg.read_text().replace("rate = 10", "rate = 5"))
    with pytest.raises(SensormlError, match=f"^{cfg}: exists and differs"):
        write_examples(tmp_path)
    r = run("sensorml.cli", "examples", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert "rate = 5" in cfg.read_text()
    write_examples(tmp_path, force=True)
    assert cfg.read_bytes() == example_files()["configs/" + cfg.name].read_bytes()


@pytest.mark.parametrize("name", CONFIGS)
def test_example_config_checks(tmp_path, name):
    write_examples(tmp_path)
    keygen(tmp_path / "keys")
    r = run("sensorml.cli", "check-config", str(tmp_path / "configs" / name))
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)
    assert resolved["feature_spec"]["window"] > 0
    assert Path(resolved["state_dir"]) == tmp_path / "state" / name.removesuffix(".toml")


def test_serial_vibration_learns_trains_and_scores_against_the_simulator(tmp_path, procs, e2e):
    link = tmp_path / "sim.pty"
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--format", "frames", "--link", str(link))
    procs.append(sim)
    assert link.is_symlink() and str(link.resolve()) == ends["serial"]
    cfg = copy_example(tmp_path, "serial_vibration.toml",
                       {"/tmp/sensorml-sim.pty": str(link), "port = 9108": "port = 0"})
    r = run("sensorml.cli", "learn", "--config", str(cfg), "--duration", "3s", "--quiet",
            "--out", str(tmp_path / "healthy.npz"))
    assert r.returncode == 0, r.stderr
    r = run("training.cli", "fit", "--features", str(tmp_path / "healthy.npz"), "--out",
            str(tmp_path / "bundles" / "serial_vibration"), "--key",
            str(tmp_path / "keys" / "signing.key"), "--name", "pump", "--version", "1")
    assert r.returncode == 0, r.stderr
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 1 loaded"), 1, "load the model")
    st = json.loads(run("sensorml.cli", "status", "--config", str(cfg), "--json").stdout)
    assert st["model"]["version"] == "1" and not st["tripped"]


def test_modbus_pump_polls_the_simulator(tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--modbus-tcp", "127.0.0.1:0")
    procs.append(sim)
    port = ends["modbus-tcp"].rsplit(":", 1)[1]
    cfg = copy_example(tmp_path, "modbus_pump.toml",
                       {"127.0.0.1:5020": f"127.0.0.1:{port}", "port = 9109": "port = 0"})
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    # the model is not trained yet: the gateway says so and runs on hard limits
    e2e.log_msgs(gw, lambda m: m.startswith("model refused"), 1, "report the missing model")
    src = {}
    for _ in range(50):
        st = json.loads(run("sensorml.cli", "status", "--config", str(cfg), "--json").stdout)
        src = next(iter(st["sources"].values()))
        if src.get("blocks", 0) >= 5:
            break
    assert src["blocks"] >= 5 and src["points_failed"] == 0 and src["outages"] == 0
