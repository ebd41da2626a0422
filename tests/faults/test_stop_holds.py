"""The stop holds: a trip that no crash, start-up failure, power cut or thread limit loses.

Real processes and peers: ``sensorml gateway`` as a subprocess reading a pty sensor
(:class:`support.devices.FrameSensor`), stopping the machine through Modbus coils on a
pymodbus TCP server on 127.0.0.1 port 0 that the test holds (it reads the coils as the
PLC would see them). The trip is the watchdog's silence trip: the test pauses the sensor.
A power cut is simulated by keeping only what was fsynced (the issue's method: copy the
files as they stand on disk right after the trip, without the WAL a checkpoint has not
folded in); the thread limit is a real pids cgroup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from firmware_bridge.sim.modbus_server import ModbusTestServer

pytestmark = pytest.mark.timeout(120)

BODY = '''
[source]
url = "serial://{link}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
[features]
window = 1024
hop = 512
[watchdog]
timeout = "300ms"
on_silence = "trip"
[latch]
verify_every = "200ms"
[[trip]]
kind = "modbus-coil"
url = "{plc}"
address = 0
timeout = "300ms"
[[trip]]
kind = "modbus-coil"
url = "{plc}"
address = 1
timeout = "300ms"
'''


@pytest.fixture
def plc():
    with ModbusTestServer({1: {"coil": 8}}) as s:
        yield s


def coils(plc: ModbusTestServer) -> list[bool]:
    return plc.get_coils(1, 0, 2)


def config(tmp_path: Path, fx, dev, plc, *, state: str = "state", port: int = 0) -> Path:
    body = BODY.format(link=dev.link, plc=plc.url)
    p = tmp_path / f"{state}.toml"
    p.write_text(f'device_id = "fault-pump"\nstate_dir = "{tmp_path / state}"\n'
                 f'[metrics]\nport = {port}\n{body}')
    return p


def run_tripped(tmp_path, fx, procs, pty_device, plc):
    """A gateway that tripped on silence, both coils set; returns (dev, gw, cfg, state)."""
    dev = pty_device(tmp_path / "sensor", rate=8000)
    cfg = config(tmp_path, fx, dev, plc)
    gw = fx.start_gateway(cfg, wait=False)
    procs.append(gw)
    fx.log_json(gw, lambda m: "open at" in m, 30, "open the serial port")
    dev.start()
    state = tmp_path / "state"
    fx.wait_until(lambda: fx.status(state)["windows"] >= 3, 15, "first windows")
    dev.pause()
    fx.log_json(gw, lambda m: m.startswith("TRIP cause=silence"), 10, "trip on silence")
    fx.wait_until(lambda: coils(plc) == [True, True], 5, "both stop coils set")
    return dev, gw, cfg, state


def test_a_power_cut_right_after_the_trip_keeps_it(tmp_path, fx, procs, pty_device, plc,
                                                   fault_report):
    """Before: the trip event sat in the WAL (synchronous=NORMAL), so the buffer as it
    stood on disk had no trip and the gateway came back unlatched."""
    dev, gw, cfg, state = run_tripped(tmp_path, fx, procs, pty_device, plc)
    cut = tmp_path / "after-cut"
    cut.mkdir()
    shutil.copy(state / "latch.json", cut / "latch.json")
    shutil.copy(state / "buffer.db", cut / "buffer.db")  # no -wal: not fsynced yet
    gw.p.send_signal(signal.SIGKILL)
    gw.p.wait(10)
    plc.set_coils(1, 0, [False, False])  # the drive lost its outputs with the power
    cfg2 = tmp_path / "cut.toml"
    cfg2.write_text(cfg.read_text().replace(f'state_dir = "{state}"', f'state_dir = "{cut}"'))
    dev.resume()
    gw2 = fx.start_gateway(cfg2, log_name="cut.log")
    procs.append(gw2)
    fx.wait_until(lambda: coils(plc) == [True, True], 5, "the stop re-sent after the cut")
    st = fx.status(cut)
    assert st["tripped"] and st["trip_reason"]["cause"] == "silence"
    assert st["trip_reason"]["restored"] is True
    fault_report.add("power_cut_right_after_trip", restored_latched=True)


def test_a_damaged_latch_file_starts_latched(tmp_path, fx, procs, pty_device, plc):
    dev, gw, cfg, state = run_tripped(tmp_path, fx, procs, pty_device, plc)
    dev.resume()  # the operator resets, then the file is damaged
    fx.wait_until(lambda: fx.reset(state)["ok"], 5, "a reset once data flows")
    assert coils(plc) == [False, False]
    gw.p.send_signal(signal.SIGKILL)
    gw.p.wait(10)
    raw = bytearray((state / "latch.json").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (state / "latch.json").write_bytes(bytes(raw))
    gw2 = fx.start_gateway(cfg, log_name="restart.log")
    procs.append(gw2)
    fx.wait_until(lambda: coils(plc) == [True, True], 5, "fail safe: the stop sent")
    assert fx.status(state)["trip_reason"]["cause"] == "latch file unreadable"


def test_a_damaged_buffer_at_start_still_sends_the_pending_stop_and_runs_on(
        tmp_path, fx, procs, pty_device, plc):
    """Before: exit 2 (cannot open buffer) before the pending trip was re-sent."""
    dev, gw, cfg, state = run_tripped(tmp_path, fx, procs, pty_device, plc)
    gw.p.send_signal(signal.SIGTERM)  # a clean stop checkpoints: the file holds it all
    gw.p.wait(10)
    db = state / "buffer.db"
    for side in ("buffer.db-wal", "buffer.db-shm"):  # else page 1 is read from the WAL
        (state / side).unlink(missing_ok=True)
    with open(db, "r+b") as f:  # then the header is damaged (a bad sector, an edit)
        f.write(b"this is not an SQLite header" * 4)
    plc.set_coils(1, 0, [False, False])
    dev.resume()
    gw2 = fx.start_gateway(cfg, log_name="restart.log")
    procs.append(gw2)
    fx.wait_until(lambda: coils(plc) == [True, True], 5, "the pending stop re-sent")
    msg = fx.log_json(gw2, lambda m: "is damaged" in m, 5, "the damaged buffer named")
    assert "moved to buffer.db.corrupt-" in msg["msg"]
    assert list(state.glob("buffer.db.corrupt-*"))
    fx.wait_until(lambda: fx.status(state)["windows"] >= 3, 15, "scoring on a new buffer")
    assert fx.status(state)["tripped"]
    fx.wait_until(lambda: fx.rows(db, "SELECT id FROM events WHERE kind = 'buffer'"), 10,
                  "the new buffer's event about the old one")


def test_a_taken_control_port_at_start_still_sends_the_stop_and_guards(
        tmp_path, fx, procs, pty_device, plc):
    """Before: exit 2 (cannot listen) before the pending trip was re-sent, and nothing
    guarded the machine afterwards."""
    dev, gw, cfg, state = run_tripped(tmp_path, fx, procs, pty_device, plc)
    gw.p.send_signal(signal.SIGKILL)
    gw.p.wait(10)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        cfg2 = config(tmp_path, fx, dev, plc, port=port)
        plc.set_coils(1, 0, [False, False])
        dev.resume()
        gw2 = fx.start_gateway(cfg2, log_name="restart.log")
        procs.append(gw2)
        fx.wait_until(lambda: coils(plc) == [True, True], 5, "the pending stop re-sent")
        fx.log_json(gw2, lambda m: "WITHOUT the control port" in m, 5, "say it runs without")
        plc.set_coils(1, 0, [False, False])  # still guarding: the lost stop comes back
        fx.wait_until(lambda: coils(plc) == [True, True], 5, "the stop maintained")
        assert gw2.p.poll() is None
    finally:
        squatter.close()


PIDS = Path("/sys/fs/cgroup/pids")


def test_out_of_threads_the_gateway_still_stops_the_machine(tmp_path, fx, procs, pty_device,
                                                            plc, fault_report):
    """The gateway in a pids cgroup at its limit, idle connections on its control port:
    before, ``trip_all`` died on ``can't start new thread`` with no stop sent."""
    if not os.access(PIDS, os.W_OK):
        pytest.skip(f"needs a writable cgroup v1 pids controller at {PIDS} (root); "
                    "tests/sensorml/edge/test_interlock.py covers the fallback in-process")
    dev = pty_device(tmp_path / "sensor", rate=8000)
    cfg = config(tmp_path, fx, dev, plc)
    gw = fx.start_gateway(cfg, wait=False)
    procs.append(gw)
    fx.log_json(gw, lambda m: "open at" in m, 30, "open the serial port")
    dev.start()
    state = tmp_path / "state"
    fx.wait_until(lambda: fx.status(state)["windows"] >= 3, 15, "first windows")
    port = int(json.loads((state / "gateway.json").read_text())["port"])
    group = PIDS / f"sensorml-test-{os.getpid()}"
    group.mkdir()
    idle = []
    try:
        (group / "cgroup.procs").write_text(str(gw.p.pid))
        (group / "pids.max").write_text((group / "pids.current").read_text().strip())
        for _ in range(20):  # each would want a thread of its own
            s = socket.create_connection(("127.0.0.1", port))
            idle.append(s)
        dev.pause()
        fx.log_json(gw, lambda m: m.startswith("TRIP cause=silence"), 10, "trip on silence")
        fx.wait_until(lambda: coils(plc) == [True, True], 5, "both stop coils set")
        assert gw.p.poll() is None
        events = (group / "pids.events").read_text().strip() if (group / "pids.events").exists() \
            else ""
        fault_report.add("threads_exhausted", pids_max=(group / "pids.max").read_text().strip(),
                         pids_events=events, stopped=True)
    finally:
        for s in idle:
            s.close()
        if gw.p.poll() is None:
            (PIDS / "cgroup.procs").write_text(str(gw.p.pid))
        try:
            group.rmdir()
        except OSError:
            pass
