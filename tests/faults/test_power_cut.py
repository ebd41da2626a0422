"""Power cut, gateway half: ``sensorml gateway`` is SIGKILLed at random moments (seeded),
restarted, and its buffer checked after every cut.

Each round: start the gateway (a ``sim://`` source inside it, so a round costs one process
start), kill it 50-500 ms after it said ``running`` (every fifth round: 50-500 ms after it
was spawned, i.e. while it opens the buffer and loads the model), then check that

- the buffer opens and ``PRAGMA integrity_check`` says ``ok``;
- every row a reader saw just before the kill is still there, and the ids of every table
  are 1..N with no hole (AUTOINCREMENT, nothing evicted here: a hole would be a lost row);
- the rows of the new round got ids above every id of the previous rounds;
- recovery: spawn -> first window scored (the first score row's timestamp) <= 2 s.

The simulated pump has a ``spikes`` sensor fault from 0.3 s of each run and a hard limit
on ``ax``: the last round runs uncut: it starts latched if a cut round recorded a trip (a trip
survives a crash until an operator resets it), and after the reset it must trip (the
trip path is armed after the cuts; the model is held off by the 5 s start-up inhibit, so
it is the limit). SIGKILL is a process death, not a loss of the page cache: the buffer runs WAL with
``synchronous=NORMAL``, so after a real power loss the last commits may roll back (the
file stays consistent); this suite checks the process-death half.

The sync-job half (:func:`power_cut_sync_rounds`): ``sensorml sync`` SIGKILLed at random
moments while the gateway runs (and is cut too every fifth round), then drained; the lake
must hold every buffer row exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

import pytest

from sensorml.buffer.db import Buffer
from sensorml.demo.procs import Proc

pytestmark = pytest.mark.timeout(240)

ROUNDS = 50
SEED = 20261126

PUMP = "sim://pump?rate=25600&seed={seed}&faults=spikes@300ms"
RAW = "[buffer]\nraw_sample_every = 20\n"


def lake_ids(lake) -> dict[str, list[int]]:
    """Row ids per table in every batch object of the lake (a repeated id = a duplicate)."""
    from sensorml.sync.batch import decode_batch

    out: dict[str, list[int]] = {}
    for f in sorted(lake.rglob("*.smlb.gz")):
        head, cols = decode_batch(f.read_bytes(), str(f))
        out.setdefault(head["table"], []).extend(int(i) for i in cols["id"])
    return out


def power_cut_sync_rounds(fx, cfg, db, lake, rounds: int, rng: random.Random,
                          tmp_path) -> dict:
    """The sync half: ``sensorml sync`` (every 0.2 s, small batches) SIGKILLed at random
    moments ``rounds`` times while the gateway runs (every fifth round the gateway is cut
    too and restarted); then a clean drain. Returns what it measured."""
    gw = fx.start_gateway(cfg, log_name="gateway-sync.log")
    sync_kills, gw_kills = 0, 0
    try:
        for r in range(rounds):
            sync = Proc([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg),
                         "--every", "0.2s"], "sync", tmp_path / f"sync-{r}.log", env=fx.GW_ENV)
            try:
                threading.Event().wait(rng.uniform(0.3, 1.2))
                sync.p.send_signal(signal.SIGKILL)
                sync.p.wait(10)
                sync_kills += 1
            finally:
                sync.stop()
            if r % 5 == 4:
                gw.p.send_signal(signal.SIGKILL)
                gw.p.wait(10)
                gw.stop()
                gw_kills += 1
                gw = fx.start_gateway(cfg, log_name=f"gateway-sync-{r}.log")
        gw.p.terminate()
        assert gw.p.wait(15) == 0
    finally:
        gw.stop()
    import subprocess

    for _ in range(5):  # drain: one clean run uploads the rest (a run may stop at a cap)
        r = subprocess.run([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg),
                            "--once"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        if not fx.rows(db, "SELECT count(*) FROM scores WHERE synced_at IS NULL")[0][0]:
            break
    return {"sync_kills": sync_kills, "gateway_kills": gw_kills}


def test_sigkill_gateway_at_random_moments_loses_no_committed_row(
        tmp_path, bundle, keys, fx, fault_report):
    rng = random.Random(SEED)
    cfg = fx.write_config(tmp_path, fx.pump_body(PUMP.format(seed=1), bundle, keys[1],
                                                 extra=RAW))
    db = tmp_path / "state" / "buffer.db"
    prev_max = {"events": 0, "scores": 0, "raw_windows": 0}
    to_running, to_scored, cut_during_start = [], [], 0
    seen_events: set[int] = set()
    trips_recorded = 0
    for r in range(ROUNDS):
        from_spawn = r % 5 == 4
        delay = rng.uniform(0.05, 0.5)
        t_spawn = time.time()
        gw = fx.start_gateway(cfg, log_name=f"gateway-{r}.log", wait=False)
        try:
            if from_spawn:
                threading.Event().wait(delay)  # the cut itself: a moment chosen at random
                cut_during_start += 1
            else:
                gw.expect(lambda s: "running" in s, 30, "start")
                to_running.append(time.time() - t_spawn)
                threading.Event().wait(delay)
            pre = fx.snapshot(db) if db.exists() else None
            gw.p.send_signal(signal.SIGKILL)
            assert gw.p.wait(10) == -signal.SIGKILL
        finally:
            gw.stop()
        if not db.exists():  # cut before the buffer was created
            continue
        assert fx.integrity(db) == "ok", f"round {r}: buffer corrupt"
        Buffer(db, readonly=True).close()  # opens: schema and migrations intact
        post = fx.snapshot(db)
        for t in ("events", "scores", "raw_windows"):
            n, top = post[t]
            assert n == top, f"round {r}: {t} ids 1..{top} but {n} rows: a committed row is gone"
            if pre is not None:
                assert n >= pre[t][0] and top >= pre[t][1], f"round {r}: {t} lost rows"
            new = fx.rows(db, f"SELECT min(id) FROM {t} WHERE id > ?", (prev_max[t],))[0][0]
            if new is not None:
                assert new == prev_max[t] + 1, f"round {r}: {t} ids not monotonic"
            prev_max[t] = top
        if pre is not None:
            assert pre["event_ids"] <= post["event_ids"], f"round {r}: events lost"
        assert seen_events <= post["event_ids"], f"round {r}: events of earlier rounds lost"
        seen_events = post["event_ids"]
        first = fx.rows(db, "SELECT min(t) FROM scores WHERE t >= ?", (t_spawn,))[0][0]
        if first is not None:
            to_scored.append(first - t_spawn)
        trips_recorded += fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'trip' "
                                      "AND t >= ?", (t_spawn,))[0][0]

    # the last round: uncut. A trip recorded by a cut round has no reset after it, so the
    # gateway starts latched with that reason (the machine stays stopped across the
    # crash); after the operator's reset the hard limit must trip again; then a clean stop
    t_spawn = time.time()
    gw = fx.start_gateway(cfg, log_name="gateway-last.log")
    state = tmp_path / "state"
    try:
        st = fx.status(state)
        assert st["tripped"] is (trips_recorded > 0), (st["tripped"], trips_recorded)
        if trips_recorded:
            assert st["trip_reason"]["restored"] is True
            assert st["trip_reason"]["cause"] == "limit"
            assert fx.reset(state)["ok"]
        trip = fx.log_json(gw, lambda m: m.startswith("TRIP"), 10, "trip on the hard limit")
        assert "cause=limit" in trip["msg"]
        gw.p.terminate()
        assert gw.p.wait(15) == 0
    finally:
        gw.stop()
    assert fx.integrity(db) == "ok"
    first = fx.rows(db, "SELECT min(t) FROM scores WHERE t >= ?", (t_spawn,))[0][0]
    to_scored.append(first - t_spawn)
    starts = fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'start'")[0][0]
    counts = {t: fx.rows(db, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("events", "scores", "raw_windows")}
    fault_report.add(
        "power_cut_gateway", rounds=ROUNDS, seed=SEED, cut_during_start=cut_during_start,
        rows_lost=0, integrity_failures=0, start_events_committed=starts,
        trips_recorded_in_cut_rounds=trips_recorded, rows_at_end=counts,
        spawn_to_running_ms=fx.summary(to_running),
        spawn_to_first_window_scored_ms=fx.summary(to_scored),
        python=sys.version.split()[0], cpus=os.cpu_count())
    assert max(to_scored) <= 2.0, f"recovery to processing took {max(to_scored):.2f} s"
    assert len(to_scored) >= 10  # enough rounds lived long enough to measure it




def test_sigkill_sync_job_at_random_moments_each_row_once_in_the_lake(
        tmp_path, bundle, keys, fx, fault_report):
    rng = random.Random(SEED + 1)
    lake = tmp_path / "lake"
    cfg = fx.write_config(tmp_path, fx.pump_body(
        PUMP.format(seed=2), bundle, keys[1],
        extra=f'{RAW}[sync]\nstore = "file://{lake}"\nbatch_rows = 50\n'))
    db = tmp_path / "state" / "buffer.db"
    got = power_cut_sync_rounds(fx, cfg, db, lake, 15, rng, tmp_path)
    assert fx.integrity(db) == "ok"
    ids = lake_ids(lake)
    dup, lost = {}, {}
    for t in ("events", "scores", "raw_windows"):
        buf = {i for (i,) in fx.rows(db, f"SELECT id FROM {t}")}
        up = ids.get(t, [])
        dup[t] = len(up) - len(set(up))
        lost[t] = len(buf - set(up))
        unsynced = fx.rows(db, f"SELECT count(*) FROM {t} WHERE synced_at IS NULL")[0][0]
        assert unsynced == 0, f"{t}: {unsynced} rows not synced after the drain"
    fault_report.add("power_cut_sync", **got, rows_in_lake={t: len(v) for t, v in ids.items()},
                     rows_duplicated=dup, rows_lost=lost,
                     batch_objects=sum(1 for _ in lake.rglob("*.smlb.gz")))
    assert not any(dup.values()), dup
    assert not any(lost.values()), lost


def test_a_trip_survives_a_sigkill_until_an_operator_resets_it(tmp_path, bundle, keys, fx):
    """The gateway trips on the hard limit and is SIGKILLed while latched (a crash, an OOM
    kill, a power cut of the gateway alone): the restarted gateway must start latched with
    the same cause, send the stop again (the hook runs with ``trip``), and stay latched
    until ``reset``; after a reset and another kill it starts unlatched. The hook writes
    each action to a file, standing in for the relay. The restarts run the healed pump
    (no fault in the source URL), so only the restored latch can hold it stopped."""
    actions = tmp_path / "actions.txt"

    hook = ("/bin/sh", "-c", f"echo $SENSORML_ACTION >> {actions}")

    def config(faults: str):
        return fx.write_config(tmp_path, fx.pump_body(
            f"sim://pump?rate=25600&seed=2{faults}", bundle, keys[1], argv=hook,
            reset_argv=hook))

    cfg = config("&faults=spikes@300ms")
    state = tmp_path / "state"

    def acts() -> list[str]:
        return actions.read_text().split() if actions.exists() else []

    def kill_once_committed(gw, kind: str) -> None:
        """SIGKILL the gateway as soon as a ``kind`` event is in its buffer."""
        fx.wait_until(lambda: fx.rows(state / "buffer.db",
                                      "SELECT count(*) FROM events WHERE kind = ?", (kind,))[0][0],
                      5, f"the {kind} event committed")
        gw.p.send_signal(signal.SIGKILL)
        gw.p.wait(10)

    gw = fx.start_gateway(cfg, log_name="gateway-0.log")
    try:
        fx.log_json(gw, lambda m: m.startswith("TRIP"), 10, "trip on the hard limit")
        kill_once_committed(gw, "trip")
    finally:
        gw.stop()
    assert acts() == ["trip"]

    cfg = config("")
    gw = fx.start_gateway(cfg, log_name="gateway-1.log")
    try:
        st = fx.status(state)
        assert st["tripped"] is True and st["trip_reason"]["restored"] is True
        assert st["trip_reason"]["cause"] == "limit"
        fx.wait_until(lambda: acts() == ["trip", "trip"], 5, "the stop sent again at start")
        fx.wait_until(lambda: fx.status(state)["windows"] > 20, 10, "windows scored")
        assert fx.status(state)["tripped"] is True  # still latched while it runs
        assert fx.reset(state)["ok"]
        assert acts() == ["trip", "trip", "reset"] and not fx.status(state)["tripped"]
        kill_once_committed(gw, "reset")
    finally:
        gw.stop()

    gw = fx.start_gateway(cfg, log_name="gateway-2.log")
    try:
        fx.wait_until(lambda: fx.status(state)["windows"] > 20, 10, "windows scored")
        assert fx.status(state)["tripped"] is False and acts() == ["trip", "trip", "reset"]
        starts = fx.rows(state / "buffer.db",
                         "SELECT detail FROM events WHERE kind = 'start' ORDER BY id")
        assert len(starts) == 3
        assert '"restored": true' in starts[1][0] and '"tripped": null' in starts[2][0]
    finally:
        gw.stop()
