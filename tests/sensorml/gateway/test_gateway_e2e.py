"""End to end, with real processes: ``sensorml simulate`` serving a pty and Modbus TCP on
127.0.0.1, ``sensorml gateway`` reading them, scoring with onnxruntime and tripping the
simulated machine. Nothing is faked; the simulator stands in for the pump."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from urllib.request import urlopen

import pytest
from pymodbus.client import ModbusTcpClient

pytestmark = pytest.mark.timeout(120)

SERIAL_SOURCE = '''
[source]
url = "serial://{pty}?format=frames"
channels = ["ax", "ay", "az"]
rate = 25600
[features]
window = 1024
hop = 512
'''


def events(cfg_dir, kind: str) -> list[dict]:
    db = sqlite3.connect(f"file:{cfg_dir / 'state' / 'buffer.db'}?mode=ro", uri=True)
    try:
        return [json.loads(d) for (d,) in db.execute(
            "SELECT detail FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        db.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorml.cli", *args], capture_output=True,
                          text=True, timeout=30)


def test_healthy_run_with_load_changes_then_bearing_fault_trips_and_latches(
        tmp_path, procs, bundle, keys, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--format", "frames", "--rate", "25600",
                          "--seed", "5", "--speed-schedule", "0:2970,2s:2700/2s,6s:2950/2s",
                          "--load-schedule", "0:0.75,3s:0.5/2s,7s:0.95/2s")
    procs.append(sim)
    cfg = e2e.write_gateway_config(tmp_path, SERIAL_SOURCE.format(pty=ends["serial"]) + f'''
[model]
bundle = "{bundle}"
trusted_keys = ["{keys[1]}"]
[[trip]]
kind = "serial-command"
url = "serial://{ends['serial']}"
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    # ten seconds of a healthy machine changing speed and load: no trip
    with pytest.raises(Exception, match="did not trip"):
        e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 10, "trip")
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["tripped"] is False and st["model"]["version"] == "1"
    assert st["windows"] >= 300, st["windows"]

    sim.send("fault outer_race 1.0 2s")
    trip = e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 20, "trip")
    assert "cause=model" in trip["msg"]
    assert e2e.sim_status(sim).split()[0] in ("coasting", "stopped")  # STOP reached the pump

    # latched: the fault is healed but the gateway keeps the machine stopped until reset
    sim.send("clear")
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["tripped"] is True and st["trip_reason"]["cause"] == "model"
    w0 = st["windows"]
    r = cli("reset", "--config", str(cfg), "--by", "test")
    assert r.returncode == 0 and "reset" in r.stdout
    assert e2e.sim_status(sim).split()[0] in ("starting", "running")
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["tripped"] is False and st["windows"] > w0  # it kept recording while latched

    info = json.loads((tmp_path / "state" / "gateway.json").read_text())
    with urlopen(f"http://127.0.0.1:{info['port']}/metrics", timeout=5) as resp:
        metrics = dict(line.rsplit(" ", 1) for line in resp.read().decode().splitlines()
                       if line and not line.startswith("#"))
    assert float(metrics["sensorml_trips_total"]) == 1
    assert float(metrics["sensorml_trip_latency_seconds_count"]) == 1
    assert float(metrics["sensorml_windows_total"]) >= st["windows"]
    assert float(metrics['sensorml_verdicts_total{verdict="trip"}']) >= 1

    gw.p.terminate()  # SIGTERM: flush and exit cleanly
    assert gw.p.wait(15) == 0
    assert not (tmp_path / "state" / "gateway.json").exists()
    (trip_ev,) = events(tmp_path, "trip")
    assert trip_ev["sample_to_trip_ms"] > 0 and trip_ev["actions"][0]["ok"] is True
    assert events(tmp_path, "reset")[0]["by"] == "test"


def test_hard_limit_trips_over_modbus_without_a_model(tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--modbus-tcp", "127.0.0.1:0", "--rate", "8000")
    procs.append(sim)
    host, port = ends["modbus-tcp"].rsplit(":", 1)
    temp = float(e2e.sim_status(sim).split("temperature_c=")[1].split()[0])
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP

    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[[slow_sources]]
url = "modbus-tcp://{ends['modbus-tcp']}?rate=20"
map = "{DEFAULT_MAP}"
[[limits]]
channel = "temperature_c"
above = {temp + 3.0}
[[trip]]
kind = "modbus-coil"
url = "modbus-tcp://{ends['modbus-tcp']}"
address = 0
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    with pytest.raises(Exception, match="did not trip"):
        e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 2, "trip")
    sim.send("fault overheating 1.0")
    trip = e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 30, "trip")
    assert "cause=limit" in trip["msg"]
    c = ModbusTcpClient(host, port=int(port), timeout=2)
    assert c.connect()
    try:
        assert c.read_coils(0, count=1, device_id=1).bits[0] is True  # the stop coil is set
    finally:
        c.close()
    assert e2e.wait_sim_state(sim, ("coasting", "stopped"), 3.0)
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["model"] is None and st["tripped"] is True
    assert st["trip_reason"]["breaches"][0]["channel"] == "temperature_c"


def test_watchdog_trips_when_the_sensor_goes_silent(tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--rate", "8000")
    procs.append(sim)
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[watchdog]
timeout = "300ms"
on_silence = "trip"
[[trip]]
kind = "command"
argv = ["{sys.executable}", "-c", "print('stopped')"]
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    sim.send("fault dropout")
    t0 = time.monotonic()
    trip = e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 10, "trip")
    silent_for = time.monotonic() - t0
    assert "cause=silence" in trip["msg"]
    assert 0.25 <= silent_for < 5.0
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["trip_reason"]["watchdog"] == "silence"


def test_bad_and_tampered_bundles_are_refused_and_the_old_model_keeps_running(
        tmp_path, procs, bundle, keys, tmp_path_factory, e2e):
    from sensorml.bundles.bundle import write_bundle

    live = tmp_path / "bundle"
    shutil.copytree(bundle, live)
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--rate", "25600")
    procs.append(sim)
    cfg = e2e.write_gateway_config(tmp_path, SERIAL_SOURCE.format(pty=ends["serial"]) + f'''
[model]
bundle = "{live}"
trusted_keys = ["{keys[1]}"]
watch = "100ms"
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)

    # a flipped byte in the model: refused on reload, version 1 keeps scoring
    data = bytearray((live / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (live / "model.onnx").write_bytes(bytes(data))
    (live / "manifest.json").touch()
    ev = e2e.log_msgs(gw, lambda m: m.startswith("model refused"), 10, "refuse the bundle")
    assert "sha256" in ev["msg"] and "keeping model 1" in ev["msg"]
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["model"]["version"] == "1" and "sha256" in st["model_error"]

    # signed by a key the gateway does not trust: refused too
    from sensorml.bundles.bundle import keygen

    other = keygen(tmp_path_factory.mktemp("otherkeys"))
    man = json.loads((bundle / "manifest.json").read_text())
    man["version"] = "2"
    shutil.rmtree(live)
    write_bundle(live, man, (bundle / "model.onnx").read_bytes(), other[0])
    ev = e2e.log_msgs(gw, lambda m: m.startswith("model refused"), 10, "refuse the bundle")
    assert "keeping model 1" in ev["msg"]

    # the same version 2 signed by the trusted key: swapped in without a restart
    shutil.rmtree(live)
    write_bundle(live, man, (bundle / "model.onnx").read_bytes(), keys[0])
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 2 loaded"), 10, "load version 2")
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["model"]["version"] == "2" and st["model_error"] is None
    gw.p.send_signal(signal.SIGHUP)  # an operator's reload: same bundle, loaded again
    e2e.log_msgs(gw, lambda m: m.startswith("model pump 2 loaded"), 10, "reload on SIGHUP")


def test_check_config_names_the_bad_key(tmp_path, e2e):
    p = e2e.write_gateway_config(tmp_path, '''
[source]
url = "serial:///dev/ttyUSB0?format=frames"
channels = ["ax"]
rate = 1000
[decision]
k = 7
n = 5
''')
    r = cli("check-config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().endswith("decision.k: 7 is larger than decision.n (5)")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_reset_is_refused_while_the_limit_is_still_breached(tmp_path, procs, e2e):
    """``sensorml reset`` as the operator types it: refused in one line (exit 1) while the
    temperature is still over its limit; once it is back under, the reset goes out and
    the simulated pump runs again. Before: every reset restarted the faulty pump."""
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--modbus-tcp", "127.0.0.1:0", "--rate", "8000")
    procs.append(sim)
    temp = float(e2e.sim_status(sim).split("temperature_c=")[1].split()[0])
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP

    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[[slow_sources]]
url = "modbus-tcp://{ends['modbus-tcp']}?rate=20"
map = "{DEFAULT_MAP}"
[[limits]]
channel = "temperature_c"
above = {temp + 3.0}
[[trip]]
kind = "modbus-coil"
url = "modbus-tcp://{ends['modbus-tcp']}"
address = 0
[reset]
min_interval = "0s"
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    sim.send("fault overheating 1.0")
    e2e.log_msgs(gw, lambda m: m.startswith("TRIP cause=limit"), 30, "trip")
    assert e2e.wait_sim_state(sim, ("coasting", "stopped"), 3.0)
    r = cli("reset", "--config", str(cfg), "--by", "jsmith")
    assert r.returncode == 1
    (line,) = r.stdout.splitlines()
    assert line.startswith("reset refused: the trip's cause is still present (temperature_c = ")
    assert "sensorml reset --force" in line and not r.stderr
    assert e2e.wait_sim_state(sim, ("coasting", "stopped"), 1.0)  # nothing was sent
    sim.send("clear")
    deadline = time.monotonic() + 60
    while (r := cli("reset", "--config", str(cfg), "--by", "jsmith")).returncode != 0:
        assert "cause is still present" in r.stdout, r.stdout  # cooling down
        assert time.monotonic() < deadline, "the temperature never came back under its limit"
        time.sleep(0.5)
    assert r.stdout.strip() == "reset"
    assert e2e.wait_sim_state(sim, ("running", "starting"), 10.0)
