"""The example configs in ``data/configs/`` work against the simulator as they are.

Each test copies ``data/`` into a temporary folder (so relative paths such as
``../../build/keys`` land there) and changes only what must differ per test run: the
simulator's pty link path, its Modbus port and the metrics port (all 0 or tmp_path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.bundles.bundle import keygen

DATA = Path(__file__).resolve().parents[2] / "data"
pytestmark = pytest.mark.timeout(120)


def copy_example(tmp_path: Path, name: str, subst: dict[str, str]) -> Path:
    shutil.copytree(DATA, tmp_path / "data")
    keygen(tmp_path / "build" / "keys")
    cfg = tmp_path / "data" / "configs" / name
    text = cfg.read_text()
    for old, new in subst.items():
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)
    return cfg


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "configs").glob("*.toml")))
def test_example_config_checks(tmp_path, name):
    shutil.copytree(DATA, tmp_path / "data")
    keygen(tmp_path / "build" / "keys")
    r = run("sensorml.cli", "check-config", str(tmp_path / "data" / "configs" / name))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["feature_spec"]["window"] > 0


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
            str(tmp_path / "build" / "bundles" / "serial_vibration"), "--key",
            str(tmp_path / "build" / "keys" / "signing.key"), "--name", "pump", "--version", "1")
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
