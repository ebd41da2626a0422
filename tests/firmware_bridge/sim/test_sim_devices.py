"""``sensorml simulate`` as a real subprocess: its pty (frames and CSV) and its Modbus TCP server.

Everything is real: the simulator process, the pty, pymodbus on 127.0.0.1 port 0, and our
own decoders on the reading side. Reads wait with deadlines. Modbus has no push, so the
register checks poll at 20 Hz until a deadline, as a gateway would.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import sys
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from support.procs import Proc, quit_sim
from support.waiting import wait_until

from firmware_bridge.codec.csvlines import CsvDecoder
from firmware_bridge.codec.frames import DecodedFrame, FrameDecoder, Message
from firmware_bridge.modbus.codec import decode_point
from firmware_bridge.modbus.regmap import load_map
from firmware_bridge.sim import cli
from firmware_bridge.sim.faults import FAULT_BITS, FAULTS
from firmware_bridge.sim.modbus_device import DEFAULT_MAP
from firmware_bridge.sim.replay import read_table

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "sim" / "pump_outer_race_2k.csv"
FAST = ["--rate", "2000", "--block", "100", "--coast", "0.3s", "--start", "0.5s"]


@pytest.fixture
def sims(tmp_path, procs):
    """Start ``sensorml simulate`` with these arguments as a real process (stopped at the
    end by ``procs``)."""
    def start(*args: str) -> Proc:
        sim = Proc([sys.executable, "-m", "firmware_bridge.sim.cli", *args], "simulator",
                   tmp_path / f"simulator-{len(procs)}.log")
        procs.append(sim)
        return sim

    return start


def said(sim: Proc, prefix: str, timeout: float = 10.0) -> str:
    """The simulator's next stdout line starting with ``prefix`` (earlier ones skipped)."""
    return sim.expect(lambda s: s.startswith(prefix), timeout, f"print {prefix!r}")


class Pty:
    """The gateway's end of the simulator's pty."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, 65536) if r else b""

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


class FrameReader:
    def __init__(self, port: Pty) -> None:
        self.port, self.dec, self.items = port, FrameDecoder(), []

    def next(self, want=DecodedFrame, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            while self.items:
                item = self.items.pop(0)
                if isinstance(item, want):
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {want.__name__} within {timeout} s")
            self.items += self.dec.feed(self.port.read(min(left, 0.2)))

    def until(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            item = self.next(DecodedFrame, max(0.01, deadline - time.monotonic()))
            if pred(item):
                return item
            if time.monotonic() > deadline:
                raise AssertionError("condition not met before the deadline")


def open_serial(sims, *args: str) -> tuple[Proc, Pty]:
    sim = sims("--serial", *FAST, *args)
    path = said(sim, "serial:").split()[1]
    said(sim, "ready")
    return sim, Pty(path)


def test_frames_stream_in_real_time_and_stop_makes_vibration_die_away(sims):
    sim, port = open_serial(sims, "--format", "frames", "--fault", "outer_race")
    rd = FrameReader(port)
    frames = [rd.next() for _ in range(6)]
    assert all(f.samples.shape == (100, 3) for f in frames)
    assert [f.seq - frames[0].seq for f in frames] == list(range(6))
    assert frames[1].t0_us - frames[0].t0_us == 50_000  # 100 samples at 2 kHz
    running = np.mean([rms(f.samples) for f in frames[1:]])
    port.write(b"STOP\n")
    assert rd.next(Message).text == "ack STOP"
    said(sim, "event stop by serial")
    first_after = rd.next()
    assert rms(first_after.samples) > 0.3 * running  # it coasts, it does not cut out
    quiet = rd.until(lambda f: rms(f.samples) < 0.1 * running)
    assert quiet.seq > first_after.seq
    port.write(b"RESET\n")
    assert rd.next(Message).text == "ack RESET"
    rd.until(lambda f: rms(f.samples) > 0.5 * running)
    port.write(b"HELLO\n")
    assert rd.next(Message).text.startswith("err unknown command")
    port.close()
    assert quit_sim(sim) == 0


def test_stdin_faults_reach_the_wire_and_dropout_silences_the_device(sims):
    sim, port = open_serial(sims, "--format", "frames")
    rd = FrameReader(port)
    rd.next()
    sim.send("fault spikes 1")
    said(sim, "ok fault spikes")
    rd.until(lambda f: np.abs(f.samples).max() > 4.0)  # a healthy pump never reaches 4 g
    sim.send("clear")
    sim.send("fault dropout")
    said(sim, "ok fault dropout")
    deadline = time.monotonic() + 5
    while data := port.read(0.3):  # until the device has gone quiet for 0.3 s
        rd.items += rd.dec.feed(data)
        assert time.monotonic() < deadline, "device kept sending during a dropout"
    rd.items.clear()
    sim.send("clear dropout")
    back = rd.next()
    assert back.missed >= 5  # 0.3 s of silence = 6 blocks of 50 ms never sent
    sim.send("status")
    assert "faults=none" in said(sim, "ok status")
    port.close()


@pytest.mark.parametrize("fmt", ["frames", "csv"])
def test_the_gateway_serial_source_reads_the_simulator_and_trips_it(sims, fmt):
    """The pairing the gateway relies on: SerialSource blocks + send_command("STOP") ack."""
    from firmware_bridge.sources import open_source

    sim = sims("--serial", *FAST, "--format", fmt)
    path = said(sim, "serial:").split()[1]
    said(sim, "ready")
    blocks: queue.Queue = queue.Queue()
    src = open_source(f"serial://{path}?format={fmt}&rate=2000", blocks.put, strict=True)
    src.start()
    try:
        first = blocks.get(timeout=5)
        assert first.channels[:3] == ("ax", "ay", "az") or first.channels == ("ch0", "ch1", "ch2")
        assert first.samples.shape[1] == 3
        latency = src.send_command("STOP", 2.0)
        assert 0 <= latency < 1.0
        said(sim, "event stop by serial")
        deadline = time.monotonic() + 5
        while rms(blocks.get(timeout=5).samples) > 0.01:
            assert time.monotonic() < deadline, "vibration did not die away after STOP"
        assert src.send_command("RESET", 2.0) >= 0
    finally:
        src.stop()


def test_csv_format_header_acks_and_replay_serves_the_recording(sims):
    sim, port = open_serial(sims, "--format", "csv", "--replay", str(SAMPLE), "--columns", "ax,az")
    names, table, _ = read_table(SAMPLE)
    dec = CsvDecoder()
    rows, msgs = [], []
    deadline = time.monotonic() + 5
    while sum(len(r) for r in rows) < 300 and time.monotonic() < deadline:
        r, m = dec.feed(port.read(0.2))
        rows.append(r)
        msgs += m
    got = np.concatenate(rows)
    assert dec.channels == ("ax", "az")
    want = table[:, [names.index("ax"), names.index("az")]]
    start = int(np.flatnonzero((want == got[0]).all(axis=1))[0])  # the pty may hold earlier rows
    assert np.array_equal(got[:200], want[start : start + 200])
    port.write(b"STOP\n")
    while "ack STOP" not in msgs:
        assert time.monotonic() < deadline + 5, f"no ack; messages {msgs}"
        msgs += dec.feed(port.read(0.2))[1]
    port.close()


def registers(client: ModbusTcpClient, table: str = "input") -> dict[str, float]:
    pts = [p for p in load_map(DEFAULT_MAP).points if p.table != "coil"]
    read = client.read_input_registers if table == "input" else client.read_holding_registers
    rr = read(0, count=16, device_id=1)
    assert not rr.isError(), rr
    return {p.name: decode_point(p, rr.registers[p.address : p.address + p.width]) for p in pts}


def poll(pred, what: str):
    """Modbus has no push: read every 50 ms until ``pred()`` is truthy (5 s deadline)."""
    return wait_until(pred, 5.0, what, every=0.05)


def test_modbus_registers_follow_the_machine_and_the_stop_coil_trips_it(sims):
    sim = sims("--modbus-tcp", "127.0.0.1:0", "--update-hz", "20", *FAST)
    port = int(said(sim, "modbus-tcp:").rsplit(":", 1)[1])
    said(sim, "ready")
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    assert client.connect()
    try:
        def warmed_up():
            r = registers(client)
            return r if r["vib_rms_ax"] > 0 else None

        v = poll(warmed_up, "the registers to warm up")
        assert v["speed_rpm"] == pytest.approx(2970, abs=15)
        assert 30 < v["temperature_c"] < 80 and v["current_a"] > 5 and v["pressure_bar"] > 3
        assert v["status"] == 1 and v["fault_code"] == 0 and 0.02 < v["vib_rms_ax"] < 0.2
        assert registers(client, "holding")["speed_rpm"] == pytest.approx(v["speed_rpm"], abs=15)
        assert not client.write_coil(0, True, device_id=1).isError()
        said(sim, "event stop by modbus coil")
        poll(lambda: registers(client)["speed_rpm"] < 100, "the pump to stop")
        assert registers(client)["status"] in (0, 3)
        assert not client.write_coil(0, False, device_id=1).isError()
        said(sim, "event reset by modbus coil")
        poll(lambda: registers(client)["speed_rpm"] > 2500, "the pump to run again")
        sim.send("stop")  # stopped another way: the coil shows it
        said(sim, "ok stop")
        poll(lambda: client.read_coils(0, count=1, device_id=1).bits[0], "the stop coil to show the stop")
        sim.send("fault overheating 1")
        poll(lambda: int(registers(client)["fault_code"]) & FAULT_BITS["overheating"],
             "the overheating fault bit")
    finally:
        client.close()
    assert quit_sim(sim) == 0


def test_gateway_modbus_source_and_coil_actuator_drive_the_simulated_pump(sims):
    """The gateway's own parts against the simulator: ModbusSource polls the pump through
    the simulator's own map; the modbus-coil actuator trips and resets it."""
    from firmware_bridge.actuators import open_actuator
    from firmware_bridge.actuators.spec import ActuatorSpec
    from firmware_bridge.sources import open_source

    sim = sims("--modbus-tcp", "127.0.0.1:0", "--update-hz", "20", *FAST)
    url = "modbus-tcp://127.0.0.1:" + said(sim, "modbus-tcp:").rsplit(":", 1)[1]
    said(sim, "ready")
    blocks: queue.Queue = queue.Queue()
    src = open_source(f"{url}?map={DEFAULT_MAP}&rate=20", blocks.put)
    act = open_actuator(ActuatorSpec(kind="modbus-coil", url=url, address=0))
    src.start()

    def speed_until(pred) -> float:
        deadline = time.monotonic() + 5
        while True:
            b = blocks.get(timeout=5)
            v = float(b.samples[0, b.channels.index("speed_rpm")])
            if pred(v):
                return v
            assert time.monotonic() < deadline, f"speed stuck at {v}"

    try:
        speed_until(lambda v: v > 2900)
        assert act.trip("test").ok
        said(sim, "event stop by modbus coil")
        speed_until(lambda v: v < 100)
        assert act.reset().ok
        speed_until(lambda v: v > 2500)
    finally:
        act.close()
        src.stop()


def test_modbus_rtu_on_a_pty_serves_the_same_registers(sims):
    sim = sims("--modbus-rtu", "--update-hz", "20", *FAST)
    said(sim, "modbus-tcp:")
    path = said(sim, "modbus-rtu:").split()[1]
    said(sim, "ready")
    client = ModbusSerialClient(port=path, baudrate=19200, timeout=2)
    assert client.connect()
    try:
        def speed():
            rr = client.read_input_registers(6, count=2, device_id=1)
            assert not rr.isError(), rr
            pt = load_map(DEFAULT_MAP).point("speed_rpm")
            return decode_point(pt, rr.registers)

        assert poll(lambda: speed() > 2900, "full speed")
        assert not client.write_coil(0, True, device_id=1).isError()
        said(sim, "event stop by modbus coil")
        poll(lambda: speed() < 100, "the pump to stop")
    finally:
        client.close()
    assert quit_sim(sim) == 0


def test_stdin_eof_keeps_serving_and_sigterm_exits_cleanly(sims):
    sim, port = open_serial(sims, "--format", "frames")
    sim.p.stdin.close()  # run detached: EOF on stdin is not a reason to stop
    rd = FrameReader(port)
    first = rd.next()
    assert rd.until(lambda f: f.seq >= first.seq + 5)
    assert sim.p.poll() is None
    sim.p.send_signal(signal.SIGTERM)
    assert sim.p.wait(10) == 0
    said(sim, "bye")
    port.close()


def test_help_documents_every_option_and_fault(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in (*FAULTS, "--serial", "--format", "--modbus-tcp", "--modbus-rtu", "--replay", "--columns",
                 "--speed-schedule", "--fault", "--at", "--ramp", "--seed", "quit"):
        assert word in text, word


def test_user_mistakes_are_one_line_errors(capsys, tmp_path):
    assert cli.main(["--serial", "--fault", "rust"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'rust' is not a known fault" in err
    assert cli.main(["--rate", "2000"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert cli.main(["--modbus-tcp", "localhost", "--rate", "2000"]) == 2
    assert "--modbus-tcp: 'localhost' is not HOST:PORT" in capsys.readouterr().err
    out = tmp_path / "rec.csv"
    assert cli.main(["--record", str(out), "--seconds", "0.25", "--rate", "2000", "--fault", "imbalance"]) == 0
    names, rows, rate = read_table(out)
    assert names[:3] == ("ax", "ay", "az") and "temperature_c" in names and rows.shape[0] == 500
