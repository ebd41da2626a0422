"""The SQLite buffer on real files: migrations, the gateway's writes, the queries other
processes make (sync, labels), and what a disk-full error looks like."""

from __future__ import annotations

import errno
import sqlite3
import time

import numpy as np
import pytest

from sensorml.buffer.connection import is_disk_full
from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import EventRow, LabelRow, PendingBatch, TableCount
from sensorml.buffer.schema import MIGRATIONS
from sensorml.errors import StoreError

RAW = np.arange(1024 * 3, dtype="<f4").reshape(1024, 3)


def raw_row(reason: str, t: float = 0.0) -> tuple:
    prio = 2 if reason == "around_alarm" else 3
    return (t, reason, prio, '["ax", "ay", "az"]', 25600.0, "<f4", "[1024, 3]", RAW.tobytes())


def score_row(i: int) -> tuple:
    return (float(i), i, 0.1, 0, "v1", np.full(40, i, "<f4").tobytes())


def test_migrations_recorded_once_and_schema_is_wal_incremental(tmp_path):
    p = tmp_path / "b.db"
    with Buffer(p, device="pump-1", clock=lambda: 7.0) as b:
        assert b.stats()["auto_vacuum"] == 2  # INCREMENTAL, set before the first table
    with BufferQueries.open(p) as q:
        first = q.migrations()
        assert [m.name for m in first] == [n for n, _ in MIGRATIONS]
        assert first[0].applied_at == 7.0
    with Buffer(p) as b:  # reopening applies nothing new and keeps the device id
        assert b.device == "pump-1"
        assert b.get_meta("device_id") == "pump-1"
    with BufferQueries.open(p, readonly=True) as q:
        assert q.migrations() == first and q.device() == "pump-1"
    con = sqlite3.connect(p)  # what is on disk: WAL, one row per migration
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    con.close()


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
        with pytest.raises(StoreError, match="newer sensorml.*0099_from_the_future"):
            BufferQueries.open(p, readonly=ro)


def test_an_older_file_is_migrated_by_a_writer_and_refused_by_a_reader(tmp_path):
    """A buffer whose ``migrations`` table lacks a known migration (here an empty one):
    a read-only open says to start the gateway once; a writable open (the sync job's,
    ``sensorml label``'s) applies what is missing."""
    p = tmp_path / "b.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="older than this sensorml.*0001_initial"):
        BufferQueries.open(p, readonly=True)
    with BufferQueries.open(p, clock=lambda: 3.0) as q:
        assert q.migrations()[0] == ("0001_initial", 3.0)
        assert q.counts()["events"] == TableCount(0, 0)


def test_not_a_database_and_missing_file_are_one_line_store_errors(tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db: cannot open buffer") as e:
        Buffer(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError, match="no buffer here"):
        Buffer(tmp_path / "absent.db", readonly=True)
    for ro in (False, True):  # labels, sync, training never create a buffer
        with pytest.raises(StoreError, match="absent.db: no buffer here"):
            BufferQueries.open(tmp_path / "absent.db", readonly=ro)
        with pytest.raises(StoreError, match="junk.db: cannot open buffer") as e:
            BufferQueries.open(bad, readonly=ro)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(StoreError, match="max_bytes"):
        Buffer(tmp_path / "tiny.db", max_bytes=1000)


def test_unsynced_in_priority_order_and_confirm_batch(tmp_path):
    p = tmp_path / "b.db"
    with Buffer(p) as b:
        b.write(raws=[raw_row("sample", 1.0), raw_row("around_alarm", 2.0), raw_row("sample", 3.0)])
    with BufferQueries.open(p, clock=lambda: 99.0) as q:
        rows = q.unsynced("raw_windows")
        assert [r.reason for r in rows] == ["around_alarm", "sample", "sample"]
        assert (rows[0].channels, rows[0].shape, rows[0].synced_at) == (("ax", "ay", "az"),
                                                                       (1024, 3), None)
        assert np.array_equal(rows[0].samples(), RAW)
        q.note_pending_batch("raw_windows", PendingBatch("ingest/x.smlb.gz", (rows[0].id, 999)))
        assert q.pending_batch("raw_windows") == ("ingest/x.smlb.gz", (rows[0].id, 999))
        assert q.confirm_batch("raw_windows", [rows[0].id, 999]) == 1  # 999 is not there
        assert q.pending_batch("raw_windows") is None
        assert q.counts()["raw_windows"] == TableCount(rows=3, unsynced=2)
        assert [r.id for r in q.unsynced("raw_windows", 1)] == [rows[1].id]
        assert q.rows_by_id("raw_windows", [rows[0].id])[0].synced_at == 99.0
        with pytest.raises(StoreError, match="'nope' is not one of events"):
            q.unsynced("nope")
    with BufferQueries.open(p, readonly=True) as q:
        with pytest.raises(StoreError, match="read-only"):
            q.confirm_batch("raw_windows", [rows[1].id])


def test_add_label_checks_the_event_and_the_verdict(tmp_path):
    p = tmp_path / "b.db"
    with Buffer(p) as b:
        eid = b.add_event("alarm", {"score": 4.2, "model_version": "m-3"}, t=10.0)
    with BufferQueries.open(p) as q:
        ev = q.recent_events(1)[0]
        assert isinstance(ev, EventRow)
        assert (ev.id, ev.severity, ev.model_version, ev.detail) == (eid, 2, "m-3",
                                                                     {"score": 4.2, "model_version": "m-3"})
        lid = q.add_label(eid, "false_alarm", "pump was being serviced", "ana", t=11.0)
        assert q.unsynced("labels") == [LabelRow(id=lid, event_id=eid, t=11.0,
                                                 verdict="false_alarm",
                                                 note="pump was being serviced",
                                                 author="ana", synced_at=None)]
        with pytest.raises(StoreError, match="event 777 does not exist") as e:
            q.add_label(777, "true_fault")
        assert "\n" not in str(e.value)
        with pytest.raises(StoreError, match="'maybe' is not one of true_fault"):
            q.add_label(eid, "maybe")
        assert q.counts()["labels"].rows == 1
        (alarm,) = q.alarm_events()
        assert alarm.event == ev and [lab.id for lab in alarm.labels] == [lid]


def test_event_detail_with_numpy_values_round_trips(tmp_path):
    with Buffer(tmp_path / "b.db", device="dev-9", clock=lambda: 42.0) as b:
        b.add_event("warn", {"score": np.float32(1.5), "x": np.arange(3), "tag": {"a"}})
    with BufferQueries.open(tmp_path / "b.db", readonly=True) as q:
        ev = q.recent_events(1)[0]
        assert ev.detail == {"score": 1.5, "x": [0, 1, 2], "tag": ["a"]}
        assert (ev.t, ev.device) == (42.0, "dev-9")
        assert time.time() > 42.0


def test_a_trip_without_a_reset_after_it_is_pending(tmp_path):
    with Buffer(tmp_path / "b.db") as b:
        assert b.pending_trip() is None
        trip = b.add_event("trip", {"cause": "limit"}, t=1.0)
        assert b.pending_trip() == (trip, 1.0, {"cause": "limit"})
        b.add_event("alarm", {}, t=2.0)  # other events do not lift it
        assert b.pending_trip().id == trip
        b.add_event("reset", {"by": "ana"}, t=3.0)
        assert b.pending_trip() is None


def test_disk_full_is_told_by_its_error_code_not_its_message(tmp_path):
    """The real SQLITE_FULL from a page quota, ENOSPC/EDQUOT from the OS; a message that
    merely says "full", or another SQLite error, is not a full disk."""
    b = Buffer(tmp_path / "b.db", max_pages=40, max_bytes=64 << 20)
    with pytest.raises(sqlite3.OperationalError) as full:
        for i in range(100):
            b.write(raws=[raw_row("sample", i)])
    b.close()
    assert full.value.sqlite_errorcode == sqlite3.SQLITE_FULL and is_disk_full(full.value)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(sqlite3.OperationalError("database or disk is full"))  # not SQLite's
    c = sqlite3.connect(tmp_path / "b.db")
    with pytest.raises(sqlite3.OperationalError) as other:
        c.execute("SELECT * FROM no_such_table_is_full")
    c.close()
    assert "full" in str(other.value) and not is_disk_full(other.value)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("full"))
