"""Disk: the buffer reaches its size cap, and the filesystem under it fills up.

A real gateway process records every window's raw samples (``raw_sample_every = 1``,
~600 KB/s at 3 x 25.6 kHz) into a small buffer. The simulated pump has a ``spikes`` fault
from 1 s and a hard limit on ``ax``, so it trips; the test resets it later and it must
trip again (trips go on while the disk is full). Checked:

- cap (``[buffer] max_mb = 1``): live pages stay under the cap; raw windows are evicted
  first, then scores; no event is evicted (ids 1..N all there) and the trip events are
  kept; every eviction is counted (recorder stats, a ``buffer`` event);
- full filesystem (a 2 MiB tmpfs mounted for the test when the machine allows it, else
  SQLite's ``max_page_count`` as a quota on an in-process recorder: the report says which
  ran): the gateway keeps windowing and tripping, write errors and drops are counted, the
  file passes ``integrity_check`` after a clean stop, and the trip events made while the
  filesystem was full are in it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)

PUMP = "sim://pump?rate=25600&seed=5&faults=spikes@1s"


def _body(fx, bundle, pub, db, max_mb: int) -> str:
    """Every window's raw samples recorded (~600 KB/s) into ``db`` capped at ``max_mb``."""
    return fx.pump_body(PUMP, bundle, pub, extra=f'[buffer]\npath = "{db}"\n'
                                                  f"max_mb = {max_mb}\nraw_sample_every = 1\n")


def _hold(seconds: float) -> None:
    threading.Event().wait(seconds)


def _trip_again(fx, gw, state) -> None:
    """Reset the latched trip; the fault is still there, so it must trip again."""
    fx.log_json(gw, lambda m: m.startswith("TRIP"), 10, "trip")
    assert fx.reset(state, force=True)["ok"]
    fx.log_json(gw, lambda m: m.startswith("TRIP"), 10, "trip again after the reset")


def test_buffer_at_its_size_cap_evicts_by_priority_and_keeps_trips(
        tmp_path, bundle, keys, fx, procs, fault_report):
    db = tmp_path / "state" / "buffer.db"
    cfg = fx.write_config(tmp_path, _body(fx, bundle, keys[1], db, 1))
    gw = fx.start_gateway(cfg)
    procs.append(gw)
    state = tmp_path / "state"
    _trip_again(fx, gw, state)
    rec = fx.wait_until(lambda: (r := fx.status(state)["recorder"])["buffer"].get(
        "evicted", {}).get("raw_windows", 0) > 0 and r, 40, "raw windows evicted at the cap")
    w = fx.status(state)["windows"]
    _hold(1.0)
    assert fx.status(state)["windows"] > w + 20  # detection goes on at the cap
    assert fx.reset(state)["ok"]
    fx.log_json(gw, lambda m: m.startswith("TRIP"), 10, "trip at the cap")
    gw.p.terminate()
    assert gw.p.wait(15) == 0
    assert fx.integrity(db) == "ok"
    ev = rec["buffer"]["evicted"]
    assert ev["raw_windows"] > 0 and ev["scores"] == 0 and ev["events"] == 0  # lowest first
    n, top = fx.rows(db, "SELECT count(*), max(id) FROM events")[0]
    assert n == top  # no event evicted
    trips = fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'trip'")[0][0]
    assert trips >= 3
    noted = fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'buffer'")[0][0]
    assert noted >= 1  # the eviction is reported in the buffer itself
    used = fx.rows(db, "SELECT (SELECT page_count FROM pragma_page_count) - "
                       "(SELECT freelist_count FROM pragma_freelist_count)")[0][0] * 4096
    assert used <= 1 << 20
    fault_report.add("disk_size_cap", max_bytes=1 << 20, live_bytes_at_end=used,
                     evicted=ev, dropped=rec["dropped"], store_dropped=rec["store_dropped"],
                     events_evicted=0, trip_events_kept=trips, buffer_notes=noted)


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"sensorml-{uuid.uuid4().hex[:6]}",
                        str(path)], capture_output=True, text=True)
    return r.returncode == 0


def test_filesystem_full_detection_and_trips_go_on(tmp_path, bundle, keys, fx, procs,
                                                   fault_report):
    small = tmp_path / "small"
    if not shutil.which("mount") or not _mount_tmpfs(small, "2m"):
        _quota_fallback(tmp_path, fault_report)
        return
    try:
        db = small / "buffer.db"
        cfg = fx.write_config(tmp_path, _body(fx, bundle, keys[1], db, 64))
        gw = fx.start_gateway(cfg)
        procs.append(gw)
        state = tmp_path / "state"
        rec = fx.wait_until(lambda: (r := fx.status(state)["recorder"])["errors"] > 0 and r,
                            40, "the filesystem to fill (write errors)")
        t_full = time.time()
        w = fx.status(state)["windows"]
        _trip_again(fx, gw, state)  # trips go on with the disk full
        _hold(1.0)
        st = fx.status(state)
        assert st["windows"] > w + 20 and st["recorder"]["alive"]
        rec = st["recorder"]
        gw.p.terminate()
        assert gw.p.wait(20) == 0
        assert fx.integrity(db) == "ok"
        trips = fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'trip'")[0][0]
        trips_full = fx.rows(db, "SELECT count(*) FROM events WHERE kind = 'trip' AND t >= ?",
                             (t_full,))[0][0]
        n, top = fx.rows(db, "SELECT count(*), max(id) FROM events")[0]
        assert n == top
        assert rec["errors"] > 0 and sum(rec["store_dropped"].values()) > 0  # counted
        free = shutil.disk_usage(small)
        wal = (small / "buffer.db-wal").stat().st_size if (small / "buffer.db-wal").exists() \
            else 0
    finally:
        for p in procs:
            p.stop()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
    fault_report.add("disk_full", ran="tmpfs 2 MiB mount", write_errors=rec["errors"],
                     last_error=rec["last_error"], evicted=rec["buffer"].get("evicted"),
                     dropped=rec["dropped"], store_dropped=rec["store_dropped"],
                     trip_events_in_buffer=trips, trips_made_while_full_persisted=trips_full,
                     pending_retry_events=rec["pending_retry_events"],
                     fs_used_bytes=free.used, fs_size=free.total, wal_bytes_at_end=wal)
    # the trip made while the filesystem was full is in the buffer: events are written on
    # their own when a batch does not fit, and sampled raw windows give way to them
    assert trips_full >= 1, (trips, rec["pending_retry_events"], wal, free)


def _quota_fallback(tmp_path, fault_report) -> None:
    """No mount here: the same pressure through SQLite's max_page_count quota."""
    import numpy as np

    from sensorml.buffer.recorder import Recorder

    rec = Recorder(tmp_path / "q.db", max_bytes=64 << 20, buffer_options={"max_pages": 300})
    x = np.zeros((1024, 3), np.float32)
    for i in range(3000):
        rec.record_raw(i, "sample", ("ax", "ay", "az"), 25600.0, x)
        rec.record_score(i, i, 0.1, 0, "1", None)
        if i % 500 == 0:
            rec.record_event("trip", {"i": i})
            rec.flush(5)
    rec.close()
    st = rec.stats()
    assert st["errors"] > 0 and st["alive"] is False
    fault_report.add("disk_full", ran="SQLite max_page_count quota (mount not permitted)",
                     write_errors=st["errors"], store_dropped=st["store_dropped"],
                     evicted=st["buffer"].get("evicted"))
