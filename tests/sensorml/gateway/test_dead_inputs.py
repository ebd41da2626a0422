"""Dead inputs that look alive, end to end with real processes: ``sensorml simulate``
(its real pty and its real Modbus TCP server on 127.0.0.1 port 0) sends all-NaN frames
(``nan``), a stuck channel (``fault stuck``) or replays frozen register values
(``freeze``), and ``sensorml gateway`` acts per ``watchdog.on_sensor_fault``."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from firmware_bridge.sim.modbus_device import DEFAULT_MAP

pytestmark = pytest.mark.timeout(120)


def events(cfg_dir, kind: str) -> list[dict]:
    db = sqlite3.connect(f"file:{cfg_dir / 'state' / 'buffer.db'}?mode=ro", uri=True)
    try:
        return [json.loads(d) for (d,) in db.execute(
            "SELECT detail FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        db.close()


def _serial_gateway(tmp_path, e2e, procs, ends, policy: str):
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[watchdog]
on_sensor_fault = "{policy}"
sensor_fault_for = "1s"
[[trip]]
kind = "serial-command"
url = "serial://{ends['serial']}"
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    return cfg, gw


@pytest.mark.parametrize(("command", "fault"), [("nan 6s", "non-finite"), ("fault stuck", "frozen")])
def test_nan_frames_or_a_stuck_channel_trip_after_sensor_fault_for(tmp_path, procs, e2e, command, fault):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--rate", "8000")
    procs.append(sim)
    cfg, gw = _serial_gateway(tmp_path, e2e, procs, ends, "trip")
    with pytest.raises(Exception, match="did not trip"):
        e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 2, "trip")  # live signal: no trip
    sim.send(command)
    sim.expect(lambda s: s.startswith("ok "), 5, "take the command")
    t0 = time.monotonic()
    trip = e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 15, "trip")
    took = time.monotonic() - t0
    print(f"\n{command!r} -> trip in {took:.2f} s (watchdog.sensor_fault_for = 1 s)")
    assert "cause=sensor" in trip["msg"] and took >= 1.0  # not before the persistence
    assert e2e.wait_sim_state(sim, ("coasting", "stopped"), 5)  # the STOP reached the pump
    gw.p.terminate()
    assert gw.p.wait(15) == 0
    (ev,) = events(tmp_path, "trip")
    assert ev["cause"] == "sensor" and ev["fault"] == fault and ev["for_s"] >= 1.0
    assert ev["actions"][0]["ok"] is True
    assert {e["fault"] for e in events(tmp_path, "sensor")} >= {fault}  # the onset, recorded


def test_nan_frames_alarm_without_a_trip_with_policy_alarm(tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--rate", "8000")
    procs.append(sim)
    cfg, gw = _serial_gateway(tmp_path, e2e, procs, ends, "alarm")
    sim.send("nan 3s")
    e2e.log_msgs(gw, lambda m: m.startswith("sensor fault alarm"), 15, "alarm")
    e2e.log_msgs(gw, lambda m: m.startswith("sensor fault cleared"), 15, "clear the fault")
    assert e2e.sim_status(sim).split()[0] == "running"
    gw.p.terminate()
    assert gw.p.wait(15) == 0
    assert events(tmp_path, "trip") == []
    alarms = [e for e in events(tmp_path, "alarm") if e.get("cause") == "sensor"]
    assert {a["fault"] for a in alarms} == {"non-finite"}
    assert [e["phase"] for e in events(tmp_path, "sensor") if e["channel"] == "ax"] == [
        "onset", "cleared"]


def test_frozen_modbus_values_go_stale_and_trip_while_the_real_temperature_rises(
        tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--modbus-tcp", "127.0.0.1:0", "--rate", "8000")
    procs.append(sim)
    temp = float(e2e.sim_status(sim).split("temperature_c=")[1].split()[0])
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[[slow_sources]]
url = "modbus-tcp://{ends['modbus-tcp']}?rate=20"
map = "{DEFAULT_MAP}"
stale_after = {{ temperature_c = "1s", pressure_bar = "1s" }}
[[limits]]
channel = "temperature_c"
above = {temp + 3.0}
[watchdog]
sensor_fault_for = "500ms"
[[trip]]
kind = "modbus-coil"
url = "modbus-tcp://{ends['modbus-tcp']}"
address = 0
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    with pytest.raises(Exception, match="did not trip"):
        e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 3, "trip")  # live values change
    sim.send("freeze")
    sim.expect(lambda s: s.startswith("ok freeze"), 5, "freeze")
    t0 = time.monotonic()
    sim.send("fault overheating 1.0")  # the real temperature rises; the registers say not
    trip = e2e.log_msgs(gw, lambda m: m.startswith("TRIP"), 15, "trip")
    took = time.monotonic() - t0
    print(f"\nfrozen registers -> trip in {took:.2f} s (stale_after 1 s + sensor_fault_for 0.5 s)")
    assert "cause=sensor" in trip["msg"]
    assert e2e.wait_sim_state(sim, ("coasting", "stopped"), 5)  # the coil stops it, frozen or not
    gw.p.terminate()
    assert gw.p.wait(15) == 0
    (ev,) = events(tmp_path, "trip")
    assert ev["cause"] == "sensor" and ev["fault"] == "stale"
    assert ev["channel"] in ("temperature_c", "pressure_bar") and ev["stale_after_s"] == 1.0
    assert ev["for_s"] >= 0.5  # acted on after watchdog.sensor_fault_for, not before
