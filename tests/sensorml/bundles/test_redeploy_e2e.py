"""End to end with real processes: a gateway on the simulated pump, a ``file://`` cloud
store, and ``sensorml sync --once`` runs (upload, heartbeat and the redeploy step). A
published version reaches the gateway, runs in shadow and goes live; a too-alarming
one is rolled back with the reason in ``/status``; a replayed desired file is refused;
``sensorml rollback`` goes back to the last good model while the gateway runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensorml.bundles.bundle import write_bundle
from sensorml.bundles.desired import make_desired

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=60)


def sync_run(cfg: Path) -> dict:
    """One ``sensorml sync --once`` (upload, then the redeploy step); its deploy report."""
    r = run("sensorml.cli", "sync", "--config", str(cfg), "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])["steps"]["deploy"]


def redeploy_alone(cfg: Path) -> dict:
    r = run("sensorml.cli", "redeploy", "--config", str(cfg))
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def status(cfg: Path) -> dict:
    r = run("sensorml.cli", "status", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def publish_version(src: Path, tmp: Path, cloud: Path, key: Path, pub: Path, version: str,
                    **over) -> None:
    """Re-sign the trained bundle as *version* and publish it as training would."""
    from training.publish import publish

    man = json.loads((src / "manifest.json").read_text())
    man.update(version=version, **over)
    b = write_bundle(tmp / f"v{version}", man, (src / "model.onnx").read_bytes(), key)
    publish(b, cloud, trusted_keys=[pub])


def desire(cloud: Path, version: str, key: Path) -> tuple[bytes, bytes]:
    data, sig = make_desired("fleet", "default", "pump", version, key=key)
    (cloud / "desired").mkdir(parents=True, exist_ok=True)
    (cloud / "desired" / "default.json").write_bytes(data)
    (cloud / "desired" / "default.json.sig").write_bytes(sig)
    return data, sig


def test_publish_shadow_promote_rollback_with_real_processes(tmp_path, procs, bundle, keys, e2e):
    cloud = tmp_path / "cloud"
    state = tmp_path / "state"
    publish_version(bundle, tmp_path, cloud, keys[0], keys[1], "1")
    first = desire(cloud, "1", keys[0])
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "sim://pump?rate=25600&seed=3"
[features]
window = 1024
hop = 512
[model]
bundle = "{state / 'bundles' / 'current'}"
trusted_keys = ["{keys[1]}"]
watch = "100ms"
[sync]
store = "file://{cloud}"
[deploy]
shadow_windows = 100
max_alarm_rate = 0.05
''')
    gw = e2e.start_gateway(cfg)  # nothing installed yet: hard limits and watchdog only
    procs.append(gw)

    # first install: no live model to compare with, so it goes live at once
    assert sync_run(cfg)["action"] == "installed"
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 1 loaded"), 15, "load version 1")

    # version 2: staged by the sync job's step, shadowed, promoted
    t0 = time.monotonic()
    publish_version(bundle, tmp_path, cloud, keys[0], keys[1], "2")
    desire(cloud, "2", keys[0])
    res = sync_run(cfg)
    assert (res["action"], res["version"]) == ("shadow", "2"), res
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 2 in shadow beside 1"), 10, "shadow v2")
    ev = e2e.log_msgs(gw, lambda m: m.startswith("model pump 2 "), 20, "decide on v2")
    publish_to_live = time.monotonic() - t0
    assert "promoted" in ev["msg"], ev["msg"]
    st = status(cfg)
    dep = st["deployment"]
    assert st["model"]["version"] == "2" and dep["live"]["version"] == "2"
    assert dep["last_good"]["version"] == "1" and dep["candidate"] is None
    assert dep["last_shadow"]["windows"] == 100 and dep["last_shadow"]["errors"] == 0
    print(f"publish -> live (redeploy run at once, 100 shadow windows): {publish_to_live:.2f} s")

    # version 3 alarms on everything: rolled back, the reason in the gateway's status
    publish_version(bundle, tmp_path, cloud, keys[0], keys[1], "3",
                    thresholds={"warn": -1e9, "alarm": -1e9, "trip": 1e9})
    desire(cloud, "3", keys[0])
    assert sync_run(cfg)["action"] == "shadow"
    ev = e2e.log_msgs(gw, lambda m: m.startswith("model pump 3 rolled back"), 20, "roll back v3")
    assert "alarm rate" in ev["msg"]
    dep = status(cfg)["deployment"]
    assert dep["live"]["version"] == "2" and dep["candidate"] is None
    assert dep["last_rollback"]["version"] == "3" and "exceeds the bound 5.0%" in dep["last_rollback"]["reason"]
    res = sync_run(cfg)
    assert res["action"] == "skipped"  # not retried on every sync run
    # ... and the heartbeat in the store says what runs and what was rolled back, and why
    beat = json.loads((cloud / "status" / "test-pump.json").read_text())["steps"]["deploy"]
    assert beat["state"]["live"]["version"] == "2"
    assert "alarm rate" in beat["state"]["last_rollback"]["reason"]
    human = run("sensorml.cli", "status", "--config", str(cfg)).stdout
    assert "last rollback 3: alarm rate" in human, human

    # version 4 is signed and hashed but its model cannot be loaded: rolled back by the gateway
    bad = write_bundle(tmp_path / "v4", {**json.loads((bundle / "manifest.json").read_text()),
                                         "version": "4"}, b"not an onnx graph", keys[0])
    from training.publish import publish

    publish(bad, cloud, trusted_keys=[keys[1]])
    desire(cloud, "4", keys[0])
    assert sync_run(cfg)["action"] == "shadow"
    ev = e2e.log_msgs(gw, lambda m: m.startswith("model pump 4 rolled back"), 20, "roll back v4")
    assert "cannot load" in ev["msg"] and "onnxruntime" in ev["msg"]
    assert status(cfg)["model"]["version"] == "2"

    # the old desired file put back in the store: refused, nothing changes
    (cloud / "desired" / "default.json").write_bytes(first[0])
    (cloud / "desired" / "default.json.sig").write_bytes(first[1])
    res = redeploy_alone(cfg)  # the step also runs on its own, outside the sync job
    assert res["action"] == "refused" and "replayed" in res["message"]

    # an operator's manual rollback: the gateway swaps the last good model in
    r = run("sensorml.cli", "rollback", "--config", str(cfg), "--reason", "test")
    assert r.returncode == 0 and r.stdout.strip() == "rolled back to pump 1 (was 2)", r.stderr
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 1 loaded"), 15, "load version 1 again")
    st = status(cfg)
    assert st["model"]["version"] == "1" and st["deployment"]["last_rollback"]["reason"] == "test"
    assert st["tripped"] is False
