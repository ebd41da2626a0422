"""The recorder's writer thread on real SQLite files: flush, drops, readers, disk full."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sensorml
from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.recorder import Recorder
from sensorml.errors import StoreError
from sensorml.gateway.metrics import Registry

REPO = Path(sensorml.__file__).resolve().parents[1]
FEATS = np.linspace(0, 1, 40, dtype=np.float32)


def read(path: Path) -> BufferQueries:
    return BufferQueries.open(path, readonly=True)


def test_flush_commits_everything_queued_before_it(tmp_path):
    p = tmp_path / "r.db"
    with Recorder(p, flush_interval_s=30.0, device="pump-7") as rec:  # only flush wakes it
        rec.record_event("start", {"model": "m-1"})
        for i in range(1000):
            rec.record_score(float(i), i, 0.25, 0, "m-1", FEATS if i % 2 else None)
        data = np.arange(2048 * 3, dtype=np.float32).reshape(2048, 3)
        rec.record_raw(5.0, "around_alarm", ("ax", "ay", "az"), 25600.0, data)
        data[:] = -1  # the recorder copied it
        assert rec.flush(10.0)
        with read(p) as r:
            c = r.counts()
            assert (c["events"].rows, c["scores"].rows, c["raw_windows"].rows) == (1, 1000, 1)
            ev = r.recent_events(1)[0]
            assert (ev.kind, ev.device, ev.detail) == ("start", "pump-7", {"model": "m-1"})
            s = r.unsynced("scores", 2)
            assert s[0].features is None and s[0].feature_vector() is None
            assert np.array_equal(s[1].feature_vector(), FEATS)
            raw = r.unsynced("raw_windows")[0]
            assert (raw.channels, raw.shape, raw.rate) == (("ax", "ay", "az"), (2048, 3), 25600.0)
            back = raw.samples()
            assert np.array_equal(back, np.arange(2048 * 3, dtype=np.float32).reshape(2048, 3))
        st = rec.stats()
        assert st["written"] == {"events": 1, "scores": 1000, "raw_alarm": 1, "raw_sample": 0}
        assert st["queued_total"] == 0 and st["commits"] >= 1000 // 256
        assert st["commit_ms"]["p50"] > 0 and st["last_commit"] is not None
    assert not rec.stats()["alive"]


def test_full_queue_drops_by_priority_and_never_drops_events(tmp_path):
    p = tmp_path / "r.db"
    rec = Recorder(p, queue_size=10, start=False)  # writer parked: the queue fills up
    for i in range(6):
        rec.record_raw(float(i), "sample", ("a",), 1.0, np.zeros((8, 1), np.float32))
    for i in range(4):
        rec.record_score(float(i), i, 0.1, 0, "m")
    for i in range(4, 7):  # full: each pushes out the oldest sampled raw window
        rec.record_score(float(i), i, 0.1, 0, "m")
    one = np.ones((8, 1), np.float32)
    rec.record_raw(9.0, "around_alarm", ("a",), 1.0, one)  # pushes out sampled ones too
    rec.record_raw(9.5, "around_alarm", ("a",), 1.0, one)
    rec.record_raw(10.0, "sample", ("a",), 1.0, one)  # nothing lower: itself dropped
    assert rec.stats()["queued"] == {"events": 0, "scores": 7, "raw_alarm": 2, "raw_sample": 1}
    for i in range(5):  # raw windows go first (sampled, then around alarms), then scores
        rec.record_score(float(i), 100 + i, 0.1, 0, "m")
    for i in range(500):
        rec.record_event("warn", {"i": i})
    st = rec.stats()
    assert st["dropped"] == {"events": 0, "scores": 2, "raw_alarm": 2, "raw_sample": 7}
    assert st["queued"] == {"events": 500, "scores": 10, "raw_alarm": 0, "raw_sample": 0}
    assert not rec.flush(0.05)  # nothing is written while the writer is parked
    rec.start()
    assert rec.flush(10.0)
    with read(p) as r:
        c = r.counts()
        assert (c["events"].rows, c["scores"].rows, c["raw_windows"].rows) == (500, 10, 0)
        assert [s.window_seq for s in r.unsynced("scores")] == [*range(7), 100, 101, 102]
    rec.close()
    rec.record_score(1.0, 1, 0.1, 0, "m")  # after close: counted, never raises
    assert rec.stats()["dropped"]["scores"] == 3


def test_a_small_cap_keeps_trips_and_evicts_raw_windows_while_recording(tmp_path):
    cap = 256 << 10
    p = tmp_path / "r.db"
    raw = np.ones((1024, 3), np.float32)
    with Recorder(p, max_bytes=cap, batch=16) as rec:
        for i in range(200):
            rec.record_raw(float(i), "sample", ("ax", "ay", "az"), 25600.0, raw)
            rec.record_score(float(i), i, 0.5, 0, "m", FEATS)
            if i % 20 == 0:
                rec.record_event("trip", {"i": i})
                assert rec.flush(10.0)
        assert rec.flush(10.0)
        st = rec.stats()
    assert st["errors"] == 0 and st["dropped"]["raw_sample"] == 0
    assert st["buffer"]["used_bytes"] <= cap * 1.25  # checked every few commits, not every row
    with read(p) as r:
        assert sorted(e.detail["i"] for e in r.recent_events(100) if e.kind == "trip") == \
            list(range(0, 200, 20))
        assert r.evicted()["raw_windows"] > 100
        assert r.counts()["scores"].rows == 200


def test_raw_sample_every_keeps_one_in_n_and_all_alarm_windows(tmp_path):
    with Recorder(tmp_path / "r.db", raw_sample_every=3) as rec:
        for i in range(9):
            rec.record_raw(float(i), "sample", ("a",), 1.0, np.full((4, 1), i, np.float32))
            rec.record_raw(float(i), "around_alarm", ("a",), 1.0, np.zeros((4, 1), np.float32))
        assert rec.flush(10.0)
        assert rec.stats()["written"]["raw_sample"] == 3
        assert rec.stats()["written"]["raw_alarm"] == 9


READER = """
import sys
from sensorml.buffer.queries import BufferQueries
last = -1
for _ in range(int(sys.argv[2])):
    with BufferQueries.open(sys.argv[1], readonly=True) as q:
        n = q.counts()["scores"].rows
    assert n >= last, (n, last)
    last = n
    print(n, flush=True)
"""


def test_another_process_reads_while_the_writer_writes(tmp_path):
    p = tmp_path / "r.db"
    with Recorder(p, batch=64, flush_interval_s=0.01) as rec:
        rec.record_event("start", {})
        assert rec.flush(10.0)
        proc = subprocess.Popen([sys.executable, "-c", READER, str(p), "200"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        i = 0
        for _line in proc.stdout:  # the reader runs ahead; each line it prints lets
            for _ in range(64):  # the writer commit one more batch (bounded test size)
                rec.record_score(float(i), i, 0.5, 0, "m", FEATS)
                i += 1
            rec.flush(10.0)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "locked" not in err
        assert i == 64 * 200
        assert rec.stats()["errors"] == 0


LABELLER = """
import sys
from sensorml.buffer.queries import BufferQueries
with BufferQueries.open(sys.argv[1]) as q:  # another writer, like `sensorml label`
    for i in range(int(sys.argv[3])):
        q.add_label(int(sys.argv[2]), "true_fault", f"note {i}", "ops")
        print(i, flush=True)
"""


def test_another_process_adds_labels_while_the_writer_writes(tmp_path):
    p = tmp_path / "r.db"
    with Recorder(p, batch=32, flush_interval_s=0.01) as rec:
        rec.record_event("alarm", {"score": 9.0})
        assert rec.flush(10.0)
        with read(p) as r:
            eid = r.recent_events(1)[0].id
        proc = subprocess.Popen([sys.executable, "-c", LABELLER, str(p), str(eid), "50"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        i = 0
        for _line in proc.stdout:
            for _ in range(32):
                rec.record_score(float(i), i, 0.5, 0, "m", FEATS)
                i += 1
            rec.flush(10.0)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert rec.stats()["errors"] == 0
    with read(p) as r:
        assert r.counts()["labels"].rows == 50
        assert r.counts()["scores"].rows == i
        with pytest.raises(StoreError, match="read-only"):
            r.add_label(eid, "false_alarm")


def test_disk_full_is_counted_evicted_and_the_writer_keeps_going(tmp_path):
    """A hard SQLite page quota (``max_page_count``) gives the real 'database or disk
    is full' error path without filling the machine's disk."""
    p = tmp_path / "r.db"
    with Recorder(p, max_bytes=64 << 20, buffer_options={"max_pages": 80}) as rec:
        for i in range(6000):
            rec.record_score(float(i), i, 0.5, 0, "m", FEATS)
            if i % 500 == 499:
                assert rec.flush(10.0)
        rec.record_event("trip", {"cause": "limit"})
        assert rec.flush(10.0)
        st = rec.stats()
        assert st["alive"]
        assert st["errors"] >= 1 and "database or disk is full" in st["last_error"]
        assert st["written"]["events"] >= 1
        assert st["buffer"]["evicted"]["scores"] > 0
    with read(p) as r:
        kinds = [e.kind for e in r.recent_events(50)]
        assert "trip" in kinds
        assert r.counts()["scores"].rows > 0


def test_events_mixed_with_raw_windows_all_reach_a_full_buffer(tmp_path):
    """A page quota of 300 pages (~1.2 MB) and raw windows of 12 KB, each batch mixing
    them with trip events: a batch that does not fit must not take its events with it
    (they are written on their own), and every raw window is accounted for as written,
    dropped under pressure, or evicted later."""
    p = tmp_path / "r.db"
    x = np.ones((1024, 3), np.float32)
    n_raw, n_ev = 400, 40
    reg = Registry()
    with Recorder(p, max_bytes=64 << 20, buffer_options={"max_pages": 300},
                  flush_interval_s=0.05) as rec:
        rec.register_metrics(reg)
        for i in range(n_raw):
            rec.record_raw(float(i), "sample", ("ax", "ay", "az"), 25600.0, x)
            if i % 10 == 9:
                rec.record_event("trip", {"i": i})
            if i % 20 == 19:
                rec.flush(10.0)
    st = rec.stats()
    assert st["errors"] >= 1 and st["buffer"]["evicted"]["events"] == 0
    assert st["store_dropped"]["events"] == 0 and st["pending_retry_events"] == 0
    assert st["written"]["events"] >= n_ev
    raw = st["written"]["raw_sample"] + st["store_dropped"]["raw_sample"] + \
        st["dropped"]["raw_sample"]
    assert raw == n_raw
    gone = st["store_dropped"]["raw_sample"]
    assert gone > 0  # reported where an operator looks, not only counted
    assert f'sensorml_recorder_store_dropped_total{{lane="raw_sample"}} {gone}' in reg.render()
    with read(p) as r:
        trips = [e.detail["i"] for e in r.recent_events(1000) if e.kind == "trip"]
        assert sorted(trips) == list(range(9, n_raw, 10))
    con = sqlite3.connect(p)  # the file itself, after the full-disk episodes
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_numpy_scalars_from_the_fast_path_are_stored_not_fatal(tmp_path):
    with Recorder(tmp_path / "r.db") as rec:
        rec.record_score(np.float64(1.5), np.int64(7), np.float32(0.75), np.int8(2),
                         "m-1", [0.5, 0.25])
        rec.record_raw(np.float64(2.0), "sample", ["ax"], np.float32(100.0),
                       np.zeros((4, 1), np.float64))
        assert rec.flush(10.0)
        assert rec.stats()["errors"] == 0
    with read(tmp_path / "r.db") as r:
        s = r.unsynced("scores")[0]
        assert (s.t, s.window_seq, s.score, s.verdict) == (1.5, 7, 0.75, 2)
        assert s.feature_vector().tolist() == [0.5, 0.25]
        raw = r.unsynced("raw_windows")[0]
        assert (raw.dtype, raw.rate) == ("<f8", 100.0)


def test_recorder_figures_show_up_in_a_metrics_registry(tmp_path):
    reg = Registry()
    with Recorder(tmp_path / "r.db", queue_size=2, start=False) as rec:
        rec.register_metrics(reg)
        for i in range(3):
            rec.record_score(float(i), i, 0.1, 0, "m")
        text = reg.render()
        assert 'sensorml_recorder_queued{lane="scores"} 2' in text
        assert 'sensorml_recorder_dropped_total{lane="scores"} 1' in text
        rec.start()
        assert rec.flush(10.0)
        text = reg.render()
        assert 'sensorml_recorder_written_total{lane="scores"} 2' in text
        assert 'sensorml_recorder_evicted_total{table="raw_windows"} 0' in text
        assert "# TYPE sensorml_recorder_errors_total counter" in text


def test_a_newer_buffer_is_refused_at_start(tmp_path):
    p = tmp_path / "r.db"
    Buffer(p).close()
    con = sqlite3.connect(p)
    con.execute("INSERT INTO migrations VALUES ('0042_newer', 0)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="0042_newer"):
        Recorder(p)


def test_unencodable_event_detail_still_records_the_event(tmp_path):
    loop: dict = {}
    loop["self"] = loop  # json cannot encode a cycle
    with Recorder(tmp_path / "r.db") as rec:
        rec.record_event("model", loop)
        rec.record_event("warn", {"score": np.float64(2.5)})
        assert rec.flush(10.0)
    with read(tmp_path / "r.db") as r:
        ev = r.recent_events(2)
        assert ev[0].detail == {"score": 2.5}
        assert "unencodable_detail" in ev[1].detail


GATEWAY_SIDE = """
import sys
from sensorml.buffer.recorder import Recorder
with Recorder(sys.argv[1], device="gw1") as rec:
    rec.record_event("start", {})
    rec.record_score(1.0, 0, 0.5, 0, "1", [0.25])
    assert rec.flush(10)
print("sqlite_utils" in sys.modules)
"""


def test_the_gateway_side_never_loads_sqlite_utils(tmp_path):
    """The recorder writes, and creates and migrates its buffer, with plain sqlite3: the
    gateway process never imports sqlite-utils (with click, pluggy, dateutil: ~7 MB of
    RSS it does not need), neither on a new file nor on an existing one."""
    p = tmp_path / "r.db"
    runs = [subprocess.run([sys.executable, "-c", GATEWAY_SIDE, str(p)], cwd=REPO,
                           capture_output=True, text=True, timeout=60) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert [r.stdout.strip() for r in runs] == ["False", "False"]
    with read(p) as q:
        assert q.counts()["scores"].rows == 2 and q.device() == "gw1"


def test_the_readers_load_sqlite_utils_without_pandas():
    """sqlite-utils imports pandas whenever it is installed; the buffer's readers (sync,
    label, offline scoring) are edge code and must not carry it. The masked import is
    checked with pandas importable (the dev environment has it through the lake extras);
    a later ``import pandas`` in the same process still works."""
    pytest.importorskip("pandas")
    code = ("import sys, sensorml.buffer.queries, sensorml.sync.job\n"
            "print('pandas' in sys.modules)\n"
            "import pandas\n"
            "print(pandas.__name__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "pandas"]
