"""The interlock: trip and reset ordered, the stop maintained, the latch durable.

Real parts: a pymodbus TCP server on 127.0.0.1 port 0 (:class:`ModbusTestServer`) and
the real Modbus coil actuator; real files for the latch. The only fake is the thread
limit of ``test_out_of_threads_*``: ``threading.Thread.start`` is made to raise as it
does at a task limit, since exhausting the host's threads is not safe in a test run
(``tests/faults/test_stop_holds.py`` does it for real in a pids cgroup)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from support.waiting import wait_until

from firmware_bridge.actuators import ActuatorSpec, open_actuator, trip_all
from firmware_bridge.sim.modbus_server import ModbusTestServer
from sensorml.edge.interlock import Interlock, LatchFile, LatchFileError
from sensorml.edge.watchdog import TripLatch


def coil(server: ModbusTestServer, address: int = 0, **kw):
    spec = ActuatorSpec.from_dict({"kind": "modbus-coil", "url": server.url, "address": address,
                                   "timeout": 0.3, "retry_pause": 0.005, **kw},
                                  key=f"trip[{address}]")
    return open_actuator(spec)


@pytest.fixture
def server():
    with ModbusTestServer({1: {"coil": 8, "holding": 8}}) as s:
        yield s


def test_a_reset_racing_a_trip_never_leaves_the_device_running_while_latched(server):
    """The issue's race: a limit that stays breached trips again while the reset goes out.
    Before, RESET could reach the device after the new STOP (1-7 runs in 100) and the
    latched gateway never sent the stop again. 200 runs, forced resets (the cause is
    present), a trip attempted every ~0.2 ms around each."""
    act = coil(server)
    events: list[tuple[str, dict]] = []
    lock = Interlock(TripLatch(), [act], record_event=lambda k, d: events.append((k, d)),
                     verify_every_s=0)  # no supervisor: the ordering alone must hold
    bad = []
    for run in range(200):
        assert lock.trip({"cause": "limit"}, float(run)) is not None or lock.latch.tripped
        done = threading.Event()

        def breached_limit(done: threading.Event = done) -> None:  # the fast path
            while not done.is_set():  # every block trips again
                lock.trip({"cause": "limit"}, time.time())
                time.sleep(0.0002)
            lock.trip({"cause": "limit"}, time.time())

        t = threading.Thread(target=breached_limit)
        t.start()
        # on_cleared: the gateway's own work between clearing the latch and sending the
        # resets (the decider's reset), widened to 1 ms so a racing trip lands in it in
        # every run: the old order (clear, then reset_all) left 200 of 200 runs running
        r = lock.reset("operator", force=True, present=lambda: ["ax = 9 above limit 4"],
                       on_cleared=lambda: time.sleep(0.001))
        done.set()
        t.join()
        assert r["ok"], r
        assert lock.latch.tripped
        if server.get_coils(1, 0)[0] is not True:
            bad.append(run)
    print(f"runs with the device running while latched: {len(bad)} of 200; "
          f"re-sent after a racing trip: {lock.reasserts}")
    assert bad == []
    assert sum(1 for k, _ in events if k == "reset") == 200
    act.close()


def test_a_reset_is_refused_while_the_cause_is_present_and_rate_limited(server):
    act = coil(server)
    now = [100.0]
    lock = Interlock(TripLatch(), [act], verify_every_s=0, min_reset_interval_s=10.0,
                     monotonic=lambda: now[0])
    lock.trip({"cause": "limit"}, 1.0)
    r = lock.reset("jsmith", present=lambda: ["temperature_c = 95.5 above limit 90"])
    assert r == {"ok": False, "refused": True, "detail": (
        "reset refused: the trip's cause is still present (temperature_c = 95.5 above limit 90);"
        " clear it first, or force the reset (sensorml reset --force)")}
    assert lock.latch.tripped and server.get_coils(1, 0)[0] is True  # nothing was sent
    assert lock.reset("jsmith", present=lambda: [])["detail"] == "reset"
    assert server.get_coils(1, 0)[0] is False
    lock.trip({"cause": "limit"}, 2.0)
    now[0] += 3.0
    r = lock.reset("jsmith", present=lambda: [])
    assert r["refused"] and "the last reset was 3.0 s ago; at most one per 10 s" in r["detail"]
    now[0] += 7.5
    assert lock.reset("jsmith", present=lambda: [])["ok"]
    assert lock.refused_resets == 2
    act.close()


def test_a_stop_the_plc_drops_is_re_asserted(server):
    """A PLC that reboots comes back with its coil at 0: read back, written again."""
    act = coil(server)
    events = []
    lock = Interlock(TripLatch(), [act], record_event=lambda k, d: events.append((k, d)),
                     verify_every_s=0.1)
    lock.start()
    try:
        lock.trip({"cause": "limit"}, 1.0)
        assert server.get_coils(1, 0)[0] is True
        server.set_coils(1, 0, [False])  # the PLC's reboot
        t0 = time.monotonic()
        wait_until(lambda: server.get_coils(1, 0)[0] is True, 5, "the coil re-asserted")
        print(f"coil re-asserted {time.monotonic() - t0:.2f} s after it dropped")
        assert lock.reasserts >= 1
        kinds = [(k, d.get("why")) for k, d in events]
        assert ("reassert", "read back without the stop") in kinds
    finally:
        lock.close()
        act.close()


def test_a_trip_target_down_at_the_trip_gets_its_stop_when_it_returns(server):
    """The issue's finding 2: TRIP FAILED while the target was down; it came back with
    its coil at 0 and the gateway never wrote it again. Now: within 1 s of its return."""
    act = coil(server, retries=1)
    lock = Interlock(TripLatch(), [act], verify_every_s=0.5)
    lock.start()
    try:
        server.stop()
        out = lock.trip({"cause": "limit"}, 1.0)
        assert out.error and lock.latch.tripped
        server.start()  # same port, coil still 0
        t0 = time.monotonic()
        wait_until(lambda: server.get_coils(1, 0)[0] is True, 5, "the stop once it is back")
        took = time.monotonic() - t0
        print(f"stop re-asserted {took:.2f} s after the target came back (verify every 0.5 s)")
        assert took <= 2.0
    finally:
        lock.close()
        act.close()


def test_out_of_threads_the_first_actuator_still_fires_and_the_others_after_it(
        server, monkeypatch):
    a, b = coil(server, 0), coil(server, 1)

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    results = trip_all([a, b], "limit")  # before: RuntimeError, no stop sent
    assert [r.ok for r in results] == [True, True]
    assert server.get_coils(1, 0, 2) == [True, True]
    lock = Interlock(TripLatch(), [a, b])
    lock.start()  # neither workers nor supervisor can start: logged, not raised
    server.set_coils(1, 0, [False, False])
    out = lock.trip({"cause": "limit"}, 1.0)
    assert out.error is None and lock.group.inline_fallbacks == 1
    assert server.get_coils(1, 0, 2) == [True, True]
    a.close()
    b.close()


def test_an_actuator_that_raises_anything_is_a_failed_trip_and_the_latch_holds(server):
    class Broken:
        name = "broken"

        def trip(self, reason):
            raise ZeroDivisionError("bug in a site's actuator")

    good = coil(server, 1)
    lock = Interlock(TripLatch(), [Broken(), good])
    lock.start()
    out = lock.trip({"cause": "model"}, 1.0)
    assert lock.latch.tripped and "ZeroDivisionError" in out.error
    assert server.get_coils(1, 1)[0] is True  # the other one still stopped the machine
    lock.close()
    good.close()


def test_the_latch_file_is_durable_checked_and_fails_safe(tmp_path, server):
    path = tmp_path / "latch.json"
    lock = Interlock(TripLatch(), [coil(server)], latch_file=LatchFile(path), verify_every_s=0)
    lock.trip({"cause": "limit", "breaches": [{"channel": "ax"}]}, 123.5)
    state = LatchFile(path).read()
    assert state["tripped"] and state["tripped_at"] == 123.5
    assert state["reason"]["cause"] == "limit"
    lock.reset("jsmith", present=lambda: [])
    assert LatchFile(path).read()["tripped"] is False
    assert not path.with_name("latch.json.tmp").exists()
    doc = json.loads(path.read_text())
    doc["state"]["tripped"] = True  # an edit, or a flipped bit
    path.write_text(json.dumps(doc))
    with pytest.raises(LatchFileError, match="checksum mismatch"):
        LatchFile(path).read()
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(LatchFileError, match="truncated or edited"):
        LatchFile(path).read()
    assert LatchFile(tmp_path / "none.json").read() is None
