"""Life signs of a gateway, with real processes: ``sensorml simulate`` enforcing the
heartbeat timeout (serial ``HB n`` lines on a real pty, or a coil on its real Modbus TCP
server on 127.0.0.1), ``sensorml gateway`` sending it, and a real ``AF_UNIX`` datagram
socket standing in for systemd's ``$NOTIFY_SOCKET`` (systemd itself does not run here).
``kill -STOP`` on the gateway is the hang: nothing in it runs, so only the device and
the service manager can notice."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from urllib.request import urlopen

import pytest
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

HB_TIMEOUT = 1.0  # the simulated device's --heartbeat-timeout


class NotifyListener:
    """systemd's side of sd_notify: an abstract-namespace datagram socket."""

    def __init__(self) -> None:
        self.name = f"@sensorml-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def env(self, watchdog_usec: int) -> dict:
        return {**os.environ, "NOTIFY_SOCKET": self.name, "WATCHDOG_USEC": str(watchdog_usec)}

    def wait_for(self, line: str, timeout: float) -> float | None:
        """Monotonic time a datagram holding ``line`` arrived, or None at the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return None
            if line in data.split("\n"):
                return time.monotonic()
        return None

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


def _gateway(tmp_path, e2e, procs, ends, heartbeat: str, notify: NotifyListener):
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
{heartbeat}
''')
    gw = e2e.start_gateway(cfg, env=notify.env(1_000_000))  # WATCHDOG=1 every 0.5 s
    procs.append(gw)
    return gw


@pytest.mark.parametrize("kind", ["modbus-coil", "serial"])
def test_sigstop_on_the_gateway_stops_the_machine_at_the_heartbeat_timeout_and_the_watchdog_pings_stop(
        tmp_path, procs, e2e, kind):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--modbus-tcp", "127.0.0.1:0", "--rate", "8000",
                              "--heartbeat-timeout", f"{HB_TIMEOUT}s")
    procs.append(sim)
    if kind == "serial":
        hb = '[heartbeat]\nkind = "serial"\nperiod = "200ms"'
        via = "serial"
    else:
        hb = (f'[heartbeat]\nkind = "modbus-coil"\nurl = "modbus-tcp://{ends["modbus-tcp"]}"\n'
              'address = 1\nperiod = "200ms"')
        via = "modbus coil"
    notify = NotifyListener()
    try:
        gw = _gateway(tmp_path, e2e, procs, ends, hb, notify)
        assert notify.wait_for("READY=1", 10) is not None
        assert notify.wait_for("WATCHDOG=1", 5) is not None
        sim.expect(lambda s: s == f"event first heartbeat by {via}", 10, "see the first heartbeat")
        assert e2e.sim_status(sim).split()[0] == "running"
        assert "heartbeat=ok" in e2e.sim_status(sim)

        os.kill(gw.p.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        try:
            sim.expect(lambda s: s.startswith("event stop by heartbeat timeout"), 10,
                       "stop the machine when the heartbeat stopped")
            took = time.monotonic() - t_stop
            print(f"\n{kind}: SIGSTOP -> device stopped itself in {took:.2f} s "
                  f"(heartbeat period 0.2 s, device timeout {HB_TIMEOUT:g} s)")
            assert took <= HB_TIMEOUT + 2.0
            status = e2e.sim_status(sim)
            assert status.split()[0] in ("coasting", "stopped") and "heartbeat=lost" in status
            # the watchdog pings stopped too: none for three ping periods
            notify.drain()
            assert notify.wait_for("WATCHDOG=1", 1.5) is None
        finally:
            os.kill(gw.p.pid, signal.SIGCONT)
        # the gateway runs again: beats and pings resume, the machine stays stopped
        assert notify.wait_for("WATCHDOG=1", 5) is not None
        sim.expect(lambda s: s.startswith(f"event heartbeat back by {via}"), 10, "see beats again")
        assert e2e.wait_sim_state(sim, ("stopped",), 15) == "stopped"
        info = json.loads((tmp_path / "state" / "gateway.json").read_text())
        with urlopen(f"http://127.0.0.1:{info['port']}/metrics", timeout=5) as r:
            metrics = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines()
                           if line and not line.startswith("#"))
        assert float(metrics["sensorml_heartbeats_total"]) >= 5
        assert float(metrics["sensorml_heartbeat_failures_total"]) == 0
        gw.p.terminate()
        assert notify.wait_for("STOPPING=1", 15) is not None
        assert gw.p.wait(15) == 0
    finally:
        notify.close()


def test_without_notify_socket_or_heartbeat_no_life_sign_thread_is_started():
    """The cost when systemd did not ask and no ``[heartbeat]`` is configured: nothing."""
    import threading

    from sensorml.gateway.lifesigns import LifeSigns

    before = threading.active_count()
    life = LifeSigns(None, lambda: 0, env={"WATCHDOG_USEC": "1000000"}).start()
    assert life.notifier is None and life.pingers == [] and life.status() == {}
    assert threading.active_count() == before
    life.close()


def test_a_stalled_fast_path_withholds_the_signs_and_a_moving_one_sends_them():
    """The rule both signs follow, on a real thread: a beat only after progress moved."""
    import threading

    from sensorml.gateway.lifesigns import Pinger

    progress = [0]
    sent = threading.Event()
    beats: list[int] = []

    def send(n: int) -> bool:
        beats.append(n)
        sent.set()
        return True

    p = Pinger("heartbeat", "test", 0.02, lambda: progress[0], send).start()
    try:
        wait_until(lambda: p.withheld >= 3, 5, "three withheld beats")
        assert beats == []  # the fast path did not move: nothing sent
        progress[0] += 1
        assert sent.wait(5) and beats == [1]
    finally:
        p.close()


def test_modbus_heartbeat_toggles_its_coil_and_an_outage_is_counted_and_logged_once(caplog):
    """A real pymodbus server on 127.0.0.1 port 0 as the PLC; it goes away and comes back
    on the same port. The beats keep their rhythm on their own connection."""
    import itertools
    import logging

    from firmware_bridge.sim.modbus_server import ModbusTestServer
    from sensorml.config import HeartbeatConfig
    from sensorml.gateway.lifesigns import ModbusBeat, Pinger

    caplog.set_level(logging.INFO, logger="sensorml.gateway.lifesigns")
    with ModbusTestServer({1: {"coil": 8}}) as plc:
        beat = ModbusBeat(HeartbeatConfig("modbus-coil", plc.url, address=3, period_s=0.05,
                                          timeout_s=0.05))
        p = Pinger("heartbeat", beat.target, 0.05, itertools.count().__next__, beat.send).start()
        try:
            seen = set()
            wait_until(lambda: seen.add(plc.get_coils(1, 3)[0]) or seen == {True, False}, 5,
                       "the coil to toggle")
            plc.stop()
            wait_until(lambda: p.failures >= 3, 10, "three failed beats")
            sent = p.sent
            plc.start()
            wait_until(lambda: p.sent >= sent + 3, 10, "beats after the PLC came back")
        finally:
            p.close()
            beat.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert len([m for m in msgs if "failing" in m]) == 1, msgs  # once per outage
    assert len([m for m in msgs if "back after" in m]) == 1, msgs
