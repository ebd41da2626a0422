"""The simulated device's side of the life signs, as a real ``sensorml simulate`` process:
it enforces the gateway's heartbeat (``HB n`` lines on its real pty, a coil or register
on its real Modbus TCP server on 127.0.0.1 port 0), and misbehaves on command (``freeze``
replays the same register values, ``nan`` sends all-NaN frames). The Modbus register
beat is sent by the gateway's own :class:`~sensorml.gateway.lifesigns.ModbusBeat`."""

from __future__ import annotations

import os
import select
import sys
import tty

import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient
from support.procs import Proc, quit_sim
from support.waiting import wait_until

from firmware_bridge.codec.frames import DecodedFrame, FrameDecoder, Message
from firmware_bridge.sim import cli

pytestmark = pytest.mark.timeout(90)
FAST = ["--rate", "2000", "--block", "100", "--coast", "0.3s", "--start", "0.3s"]


@pytest.fixture
def sims(tmp_path, procs):
    def start(*args: str) -> tuple[Proc, dict]:
        sim = Proc([sys.executable, "-m", "firmware_bridge.sim.cli", *args, *FAST], "simulator",
                   tmp_path / f"simulator-{len(procs)}.log")
        procs.append(sim)
        ends = {}
        while True:
            line = sim.expect(lambda s: s.split(":")[0] in ("serial", "modbus-tcp", "ready"), 20,
                              "print its endpoints")
            if line == "ready":
                return sim, ends
            kind, rest = line.split(":", 1)
            ends[kind] = rest.split()[0]

    return start


def said(sim: Proc, prefix: str, timeout: float = 10.0) -> str:
    return sim.expect(lambda s: s.startswith(prefix), timeout, f"print {prefix!r}")


def status(sim: Proc) -> str:
    """The status line without its ``ok status`` prefix: ``running t=... heartbeat=ok ...``."""
    sim.send("status")
    return said(sim, "ok status")[10:]


class Frames:
    """The gateway's end of the pty: raw, decoded with our frame decoder."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.dec = FrameDecoder()
        self.items: list = []

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def until(self, pred, timeout: float = 5.0):
        def got():
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                self.items += self.dec.feed(os.read(self.fd, 65536))
            while self.items:
                item = self.items.pop(0)
                if pred(item):
                    return item
            return None

        return wait_until(got, timeout, "a frame or message", every=0.0)

    def close(self) -> None:
        os.close(self.fd)


def test_serial_heartbeat_is_enforced_from_the_first_beat_and_gets_no_answer(sims):
    sim, ends = sims("--serial", "--heartbeat-timeout", "0.5s")
    port = Frames(ends["serial"])
    try:
        assert "heartbeat=none" in status(sim)
        port.until(lambda f: isinstance(f, DecodedFrame))  # no beat yet: not supervised
        port.write(b"HB 1\n")
        said(sim, "event first heartbeat by serial")
        for n in range(2, 6):
            port.write(f"HB {n}\n".encode())
            port.until(lambda f: isinstance(f, DecodedFrame))  # paced by the frames
        assert status(sim).split()[0] == "running"
        said(sim, "event stop by heartbeat timeout", 5)  # the beats stopped
        st = status(sim)
        assert st.split()[0] in ("coasting", "stopped") and "heartbeat=lost" in st
        sim.send("reset")  # a reset while the beats are missing: stopped again at once
        said(sim, "event stop by heartbeat timeout", 5)
        port.write(b"HB 6\n")
        said(sim, "event heartbeat back by serial")
        port.write(b"STOP\n")  # commands still answer; HB lines never did
        msg = port.until(lambda f: isinstance(f, Message))
        assert msg.text == "ack STOP"
    finally:
        port.close()
    assert quit_sim(sim) == 0


def test_modbus_register_heartbeat_from_the_gateway_and_its_loss(sims):
    import itertools

    from sensorml.config import HeartbeatConfig
    from sensorml.gateway.lifesigns import ModbusBeat, Pinger

    sim, ends = sims("--modbus-tcp", "127.0.0.1:0", "--update-hz", "20",
                     "--heartbeat-timeout", "0.5s")
    beat = ModbusBeat(HeartbeatConfig("modbus-register", f"modbus-tcp://{ends['modbus-tcp']}",
                                      address=100, period_s=0.1))
    moving = itertools.count().__next__  # a fast path that always advances
    pinger = Pinger("heartbeat", beat.target, 0.1, moving, beat.send).start()
    try:
        said(sim, "event first heartbeat by modbus register")
        wait_until(lambda: pinger.sent >= 5, 5, "five beats")
        assert status(sim).split()[0] == "running" and "heartbeat=ok" in status(sim)
        pinger.close()  # the gateway's beats stop
        said(sim, "event stop by heartbeat timeout", 5)
        assert status(sim).split()[0] in ("coasting", "stopped")
        assert pinger.failures == 0
    finally:
        pinger.close()
        beat.close()
    assert quit_sim(sim) == 0


def _input_registers(client: ModbusTcpClient) -> list[int]:
    rr = client.read_input_registers(0, count=16, device_id=1)
    assert not rr.isError(), rr
    return list(rr.registers)


def test_freeze_replays_the_same_register_values_while_the_machine_moves_on(sims):
    sim, ends = sims("--modbus-tcp", "127.0.0.1:0", "--update-hz", "20")
    host, port = ends["modbus-tcp"].rsplit(":", 1)
    client = ModbusTcpClient(host, port=int(port), timeout=2)
    assert client.connect()
    try:
        first = _input_registers(client)
        wait_until(lambda: _input_registers(client) != first, 5, "live registers to change")
        sim.send("freeze")
        said(sim, "ok freeze on until switched off")
        frozen = _input_registers(client)
        t0 = status(sim).split()[1]
        wait_until(lambda: status(sim).split()[1] != t0, 5, "machine time to move")
        for _ in range(5):
            assert _input_registers(client) == frozen
        assert not client.write_coil(0, True, device_id=1).isError()  # the stop still works
        said(sim, "event stop by modbus coil")
        assert _input_registers(client) == frozen
        sim.send("freeze off")
        said(sim, "ok freeze off")
        wait_until(lambda: _input_registers(client) != frozen, 5, "registers to change again")
    finally:
        client.close()
    assert quit_sim(sim) == 0


def test_nan_sends_all_nan_frames_for_a_while_then_real_samples(sims):
    sim, ends = sims("--serial")
    port = Frames(ends["serial"])
    try:
        port.until(lambda f: isinstance(f, DecodedFrame) and np.isfinite(f.samples).all())
        sim.send("nan 0.5s")
        said(sim, "ok nan on for")
        bad = port.until(lambda f: isinstance(f, DecodedFrame) and np.isnan(f.samples).all())
        port.until(lambda f: isinstance(f, DecodedFrame) and f.seq > bad.seq
                   and np.isfinite(f.samples).all())
        assert "nan=off" in status(sim)
    finally:
        port.close()
    assert quit_sim(sim) == 0


def test_life_sign_mistakes_are_one_line_errors(capsys):
    assert cli.main(["--serial", "--heartbeat-timeout", "soon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--heartbeat-timeout: 'soon' is not a duration" in err
    assert cli.main(["--serial", "--heartbeat-timeout", "0s"]) == 2
    assert "must be more than 0 s" in capsys.readouterr().err
