"""The SQLite buffer on real files: migrations, retention under a cap, sync helpers."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from sensorml.buffer.db import MIGRATIONS, Buffer
from sensorml.errors import StoreError

RAW = np.arange(1024 * 3, dtype="<f4").reshape(1024, 3)


def raw_row(reason: str, t: float = 0.0) -> tuple:
    prio = 2 if reason == "around_alarm" else 3
    return (t, reason, prio, '["ax", "ay", "az"]', 25600.0, "<f4", "[1024, 3]", RAW.tobytes())


def score_row(i: int) -> tuple:
    return (float(i), i, 0.1, 0, "v1", np.full(40, i, "<f4").tobytes())


def test_migrations_recorded_once_and_schema_is_wal_incremental(tmp_path):
    p = tmp_path / "b.db"
    with Buffer(p, device="pump-1") as b:
        first = b.migrations()
        assert [n for n, _ in first] == [n for n, _ in MIGRATIONS]
        assert b.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert b.stats()["auto_vacuum"] == 2  # INCREMENTAL, set before the first table
    with Buffer(p) as b:  # reopening applies nothing new and keeps the device id
        assert b.migrations() == first
        assert b.device == "pump-1"
        assert b.get_meta("device_id") == "pump-1"


def test_newer_database_is_refused_with_the_unknown_migration(tmp_path):
    p = tmp_path / "b.db"
    Buffer(p).close()
    con = sqlite3.connect(p)
    con.execute("INSERT INTO migrations VALUES ('0099_from_the_future', 0)")
    con.commit()
    con.close()
    for ro in (False, True):
        with pytest.raises(StoreError, match="newer sensorml.*0099_from_the_future"):
            Buffer(p, readonly=ro)


def test_not_a_database_and_missing_file_are_one_line_store_errors(tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db: cannot open buffer") as e:
        Buffer(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError, match="no buffer here"):
        Buffer(tmp_path / "absent.db", readonly=True)
    with pytest.raises(StoreError, match="max_bytes"):
        Buffer(tmp_path / "tiny.db", max_bytes=1000)


def test_retention_evicts_raw_then_scores_and_keeps_alarms_and_trips(tmp_path):
    cap = 384 << 10
    b = Buffer(tmp_path / "b.db", max_bytes=cap)
    trips = []
    for i in range(60):  # fill to ~3x the cap, then enforce once
        kind = ("trip", "alarm", "warn", "reload")[i % 4]
        raws = [raw_row("sample", i), raw_row("around_alarm", i)] if i % 2 else [raw_row("sample", i)]
        b.write(events=[b.event_row(kind, {"i": i}, float(i))],
                scores=[score_row(i * 10 + k) for k in range(10)], raws=raws, enforce=False)
        if kind in ("trip", "alarm"):
            trips.append(i)
    assert b.used_bytes() > 2 * cap
    b.enforce_cap()
    st = b.stats()
    assert st["used_bytes"] <= cap
    assert st["evicted"]["raw_windows"] > 0
    prio = {p for (p,) in b.conn.execute("SELECT priority FROM raw_windows")}
    if b.conn.execute("SELECT count(*) FROM raw_windows WHERE priority = 2").fetchone()[0] < 30:
        assert 3 not in prio, "sampled raw windows go before raw windows around alarms"
    if st["evicted"]["scores"]:
        assert not prio, "raw windows go before scores"
    kept = [d["detail"]["i"] for d in b.recent_events(1000) if d["kind"] in ("trip", "alarm")]
    assert sorted(kept) == trips
    # every eviction is counted: written - kept
    counts = b.counts()
    assert counts["raw_windows"]["rows"] + st["evicted"]["raw_windows"] == 60 + 30
    assert counts["scores"]["rows"] + st["evicted"]["scores"] == 600
    notes = [e for e in b.recent_events(1000) if e["kind"] == "buffer"]
    assert notes and notes[-1]["detail"]["evicted"]["raw_windows"] > 0
    assert notes[-1]["detail"]["max_bytes"] == cap
    # incremental vacuum: the file itself shrinks back under the cap
    b.checkpoint("TRUNCATE")
    assert (tmp_path / "b.db").stat().st_size <= cap
    b.close()
    with Buffer(tmp_path / "b.db", readonly=True) as r:  # counters survive a restart
        assert r.get_meta("evicted.raw_windows") == str(st["evicted"]["raw_windows"])


def test_scores_evicted_before_events_when_raw_is_gone(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=128 << 10, check_every=1)
    for i in range(40):
        b.write(events=[b.event_row("reload" if i % 2 else "trip", {"i": i}, float(i))],
                scores=[score_row(i * 50 + k) for k in range(50)])
    st = b.stats()
    assert st["evicted"]["scores"] > 0 and st["evicted"]["events"] == 0
    assert b.counts()["events"]["rows"] >= 40


def test_synced_rows_are_evicted_before_unsynced_ones(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=4 << 20)
    b.write(raws=[raw_row("sample", i) for i in range(40)])
    ids = [r["id"] for r in b.unsynced("raw_windows", 100)]
    synced = ids[-5:]  # the newest five
    assert b.mark_synced("raw_windows", synced, t=123.0) == 5
    b.max_bytes = b.used_bytes() - (60 << 10)  # about five raw windows too many
    evicted = b.enforce_cap()
    left = [i for (i,) in b.conn.execute("SELECT id FROM raw_windows")]
    assert not set(synced) & set(left)
    assert evicted["raw_windows"] >= 5
    n_unsynced_gone = evicted["raw_windows"] - 5
    assert left == ids[n_unsynced_gone:-5], "then the oldest unsynced"


def test_unsynced_in_priority_order_and_mark_synced(tmp_path):
    with Buffer(tmp_path / "b.db") as b:
        b.write(raws=[raw_row("sample", 1.0), raw_row("around_alarm", 2.0), raw_row("sample", 3.0)])
        rows = b.unsynced("raw_windows")
        assert [r["reason"] for r in rows] == ["around_alarm", "sample", "sample"]
        data = np.frombuffer(rows[0]["data"], rows[0]["dtype"]).reshape(1024, 3)
        assert np.array_equal(data, RAW)
        assert b.mark_synced("raw_windows", [rows[0]["id"], 999]) == 1
        assert b.counts()["raw_windows"] == {"rows": 3, "unsynced": 2}
        assert [r["id"] for r in b.unsynced("raw_windows", 1)] == [rows[1]["id"]]
        with pytest.raises(StoreError, match="'nope' is not one of events"):
            b.unsynced("nope")


def test_add_label_checks_the_event_and_the_verdict(tmp_path):
    with Buffer(tmp_path / "b.db") as b:
        eid = b.add_event("alarm", {"score": 4.2, "model_version": "m-3"}, t=10.0)
        ev = b.recent_events(1)[0]
        assert (ev["id"], ev["severity"], ev["model_version"]) == (eid, 2, "m-3")
        lid = b.add_label(eid, "false_alarm", "pump was being serviced", "ana", t=11.0)
        assert b.unsynced("labels")[0] == {
            "id": lid, "event_id": eid, "t": 11.0, "verdict": "false_alarm",
            "note": "pump was being serviced", "author": "ana", "synced_at": None}
        with pytest.raises(StoreError, match="event 777 does not exist") as e:
            b.add_label(777, "true_fault")
        assert "\n" not in str(e.value)
        with pytest.raises(StoreError, match="'maybe' is not one of true_fault"):
            b.add_label(eid, "maybe")
        assert b.counts()["labels"]["rows"] == 1


def test_a_hard_page_quota_raises_the_real_disk_full_error(tmp_path):
    b = Buffer(tmp_path / "b.db", max_pages=40, max_bytes=64 << 20)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        for i in range(100):
            b.write(raws=[raw_row("sample", i)])
    n = b.counts()["raw_windows"]["rows"]  # the failed batch was rolled back, not torn
    evicted = b.enforce_cap(force=True)
    assert evicted["raw_windows"] >= 1
    b.write(events=[b.event_row("trip", {"after": "full"})])  # room again
    assert b.counts()["raw_windows"]["rows"] == n - evicted["raw_windows"]
    assert b.recent_events(1)[0]["kind"] == "trip"


def test_event_detail_with_numpy_values_round_trips(tmp_path):
    with Buffer(tmp_path / "b.db", device="dev-9", clock=lambda: 42.0) as b:
        b.add_event("warn", {"score": np.float32(1.5), "x": np.arange(3), "tag": {"a"}})
        ev = b.recent_events(1)[0]
        assert ev["detail"] == {"score": 1.5, "x": [0, 1, 2], "tag": ["a"]}
        assert (ev["t"], ev["device"]) == (42.0, "dev-9")
        assert time.time() > 42.0
