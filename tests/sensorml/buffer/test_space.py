"""The buffer's space keeper on real files: the size cap evicts by priority, synced
before unsynced, alarms and trips last; a hard page quota gives the real disk-full error."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries

RAW = np.arange(1024 * 3, dtype="<f4").reshape(1024, 3)


def raw_row(reason: str, t: float = 0.0) -> tuple:
    prio = 2 if reason == "around_alarm" else 3
    return (t, reason, prio, '["ax", "ay", "az"]', 25600.0, "<f4", "[1024, 3]", RAW.tobytes())


def score_row(i: int) -> tuple:
    return (float(i), i, 0.1, 0, "v1", np.full(40, i, "<f4").tobytes())


def on_disk(path, sql: str) -> list:
    """What is in the file, read as another process would."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def test_retention_evicts_raw_then_scores_and_keeps_alarms_and_trips(tmp_path):
    cap = 384 << 10
    p = tmp_path / "b.db"
    b = Buffer(p, max_bytes=cap)
    trips = []
    for i in range(60):  # fill to ~3x the cap, then enforce once
        kind = ("trip", "alarm", "warn", "reload")[i % 4]
        raws = [raw_row("sample", i), raw_row("around_alarm", i)] if i % 2 else [raw_row("sample", i)]
        b.write(events=[b.event_row(kind, {"i": i}, float(i))],
                scores=[score_row(i * 10 + k) for k in range(10)], raws=raws, enforce=False)
        if kind in ("trip", "alarm"):
            trips.append(i)
    assert b.space.used_bytes() > 2 * cap
    b.space.enforce_cap()
    st = b.stats()
    assert st["used_bytes"] <= cap
    assert st["evicted"]["raw_windows"] > 0
    prio = {p for (p,) in on_disk(p, "SELECT priority FROM raw_windows")}
    if on_disk(p, "SELECT count(*) FROM raw_windows WHERE priority = 2")[0][0] < 30:
        assert 3 not in prio, "sampled raw windows go before raw windows around alarms"
    if st["evicted"]["scores"]:
        assert not prio, "raw windows go before scores"
    with BufferQueries.open(p, readonly=True) as q:
        events = q.recent_events(1000)
        counts = q.counts()
    kept = [e.detail["i"] for e in events if e.kind in ("trip", "alarm")]
    assert sorted(kept) == trips
    # every eviction is counted: written - kept
    assert counts["raw_windows"].rows + st["evicted"]["raw_windows"] == 60 + 30
    assert counts["scores"].rows + st["evicted"]["scores"] == 600
    notes = [e for e in events if e.kind == "buffer"]
    assert notes and notes[-1].detail["evicted"]["raw_windows"] > 0
    assert notes[-1].detail["max_bytes"] == cap
    # incremental vacuum: the file itself shrinks back under the cap
    b.space.checkpoint("TRUNCATE")
    assert p.stat().st_size <= cap
    b.close()
    with BufferQueries.open(p, readonly=True) as q:  # counters survive a restart
        assert q.evicted()["raw_windows"] == st["evicted"]["raw_windows"]
    with Buffer(p) as again:
        assert again.stats()["evicted"] == st["evicted"]


def test_scores_evicted_before_events_when_raw_is_gone(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=128 << 10, check_every=1)
    for i in range(40):
        b.write(events=[b.event_row("reload" if i % 2 else "trip", {"i": i}, float(i))],
                scores=[score_row(i * 50 + k) for k in range(50)])
    st = b.stats()
    b.close()
    assert st["evicted"]["scores"] > 0 and st["evicted"]["events"] == 0
    assert on_disk(tmp_path / "b.db", "SELECT count(*) FROM events")[0][0] >= 40


def test_synced_rows_are_evicted_before_unsynced_ones(tmp_path):
    p = tmp_path / "b.db"
    b = Buffer(p, max_bytes=4 << 20)
    b.write(raws=[raw_row("sample", i) for i in range(40)])
    with BufferQueries.open(p) as q:
        ids = [r.id for r in q.unsynced("raw_windows", 100)]
        synced = ids[-5:]  # the newest five
        assert q.confirm_batch("raw_windows", synced, t=123.0) == 5
    b.space.max_bytes = b.space.used_bytes() - (60 << 10)  # about five raw windows too many
    evicted = b.space.enforce_cap()
    left = [i for (i,) in on_disk(p, "SELECT id FROM raw_windows")]
    b.close()
    assert not set(synced) & set(left)
    assert evicted["raw_windows"] >= 5
    n_unsynced_gone = evicted["raw_windows"] - 5
    assert left == ids[n_unsynced_gone:-5], "then the oldest unsynced"


def test_a_hard_page_quota_raises_the_real_disk_full_error(tmp_path):
    p = tmp_path / "b.db"
    b = Buffer(p, max_pages=40, max_bytes=64 << 20)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        for i in range(100):
            b.write(raws=[raw_row("sample", i)])
    count = "SELECT count(*) FROM raw_windows"
    n = on_disk(p, count)[0][0]  # the failed batch was rolled back, not torn
    evicted = b.space.enforce_cap(force=True)
    assert evicted["raw_windows"] >= 1
    b.write(events=[b.event_row("trip", {"after": "full"})])  # room again
    assert on_disk(p, count)[0][0] == n - evicted["raw_windows"]
    assert on_disk(p, "SELECT kind FROM events ORDER BY id DESC LIMIT 1") == [("trip",)]
    b.close()


def test_the_ballast_is_released_when_full_and_made_again_when_there_is_room(tmp_path):
    with Buffer(tmp_path / "b.db") as b:
        ballast = tmp_path / "b.db.ballast"
        assert b.space.ballast_path == ballast and ballast.stat().st_size > 0  # made at open
        assert b.space.release_ballast() and not ballast.exists()
        assert not b.space.release_ballast()  # nothing left to give back
        assert b.space.restore_ballast() and ballast.exists()
