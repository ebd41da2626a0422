"""Recorder and buffer figures: enqueue cost on the fast path, writer throughput,
commit latency and the spikes WAL checkpoints cause; the gateway's plain-sqlite3 write
path side by side with sqlite-utils' ``insert_all`` on the same rows.

Run: ``python -m benchmarks buffer``. Figures are medians of several runs.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sensorml.buffer.db import Buffer
from sensorml.buffer.recorder import Recorder

FEATS = np.random.default_rng(0).random(40, dtype=np.float32)
RAW = np.random.default_rng(1).random((1024, 3), dtype=np.float32)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def enqueue_cost(d: Path, paced_hz: float | None, n: int) -> tuple[float, float]:
    """µs per ``record_score`` call (p50, p99) with the writer running beside it."""
    times = []
    with Recorder(d / "enq.db", queue_size=max(20000, n)) as rec:
        pc = time.perf_counter_ns
        period = 1.0 / paced_hz if paced_hz else 0.0
        next_t = time.perf_counter()
        for i in range(n):
            t0 = pc()
            rec.record_score(1.0, i, 0.5, 0, "m-1", FEATS)
            times.append((pc() - t0) / 1e3)
            if period:  # the real arrival rate: the fast path waits on its queue (GIL free)
                next_t += period
                time.sleep(max(0.0, next_t - time.perf_counter()))
        rec.flush(60)
        dropped = rec.stats()["dropped"]["scores"]
    if dropped:
        print(f"    (writer fell behind: {dropped} scores dropped)")
    return _pct(times, 0.5), _pct(times, 0.99)


def writer_throughput(d: Path, n: int, raw: bool, wal_pages: int = 4000,
                      busy_thread: bool = False) -> tuple[float, dict]:
    """Rows/s the writer commits from a full queue (writer parked while it fills).

    ``busy_thread``: another thread runs pure Python meanwhile (a saturated fast path),
    the case where per-row GIL hand-offs (``executemany``) starve the writer.
    """
    path = d / f"thr-{time.perf_counter_ns()}.db"
    rec = Recorder(path, queue_size=n, batch=256, start=False, flush_interval_s=0.05,
                   buffer_options={"wal_autocheckpoint": wal_pages})
    for i in range(n):
        if raw:
            rec.record_raw(1.0, "sample", ("ax", "ay", "az"), 25600.0, RAW)
        else:
            rec.record_score(1.0, i, 0.5, 0, "m-1", FEATS)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    spinner = threading.Thread(target=spin)
    if busy_thread:
        spinner.start()
    t0 = time.perf_counter()
    rec.start()
    assert rec.flush(120)
    dt = time.perf_counter() - t0
    stop.set()
    if busy_thread:
        spinner.join()
    st = rec.stats()
    rec.close()
    return n / dt, st


def sustained(d: Path, rate_hz: float, seconds: float) -> dict:
    """Scores at a steady rate for a while: commit latency, spikes, idle checkpoints."""
    with Recorder(d / "sus.db", flush_interval_s=0.05, idle_checkpoint_s=0.2) as rec:
        period = 1.0 / rate_hz
        t_end = time.perf_counter() + seconds
        next_t = time.perf_counter()
        i = 0
        while time.perf_counter() < t_end:
            rec.record_score(time.time(), i, 0.5, 0, "m-1", FEATS)
            i += 1
            if i % 1000 == 0:  # a pause now and then lets the idle checkpoint run
                threading.Event().wait(0.3)
                next_t = time.perf_counter()
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
        rec.flush(60)
        return rec.stats()


def direct_executemany(d: Path, n: int, batch: int) -> float:
    """Rows/s of ``Buffer.write`` alone (no queue): the SQLite floor for scores."""
    rows = [(1.0, i, 0.5, 0, "m-1", FEATS.tobytes()) for i in range(batch)]
    with Buffer(d / f"direct-{batch}.db") as b:
        t0 = time.perf_counter()
        for _ in range(n // batch):
            b.write(scores=rows)
        return n / (time.perf_counter() - t0)


def sqlite_utils_insert_all(d: Path, n: int, batch: int) -> tuple[float, float]:
    """The same score rows through sqlite-utils into the same schema and pragmas (WAL,
    synchronous=NORMAL), one ``insert_all`` per transaction: ``(rows/s, µs per call)``.
    The file is made by :class:`Buffer`; sqlite-utils opens it on its own connection."""
    import sqlite_utils

    from sensorml.buffer.schema import INSERT_COLUMNS

    path = d / f"su-{batch}.db"
    Buffer(path).close()
    rows = [dict(zip(INSERT_COLUMNS["scores"], (1.0, i, 0.5, 0, "m-1", FEATS.tobytes())))
            for i in range(batch)]
    db = sqlite_utils.Database(path, recursive_triggers=False, execute_plugins=False)
    db.execute("PRAGMA synchronous = NORMAL")
    table = db["scores"]
    try:
        t0 = time.perf_counter()
        for _ in range(n // batch):
            with db.atomic():
                table.insert_all(rows, batch_size=batch)
        dt = time.perf_counter() - t0
    finally:
        db.close()
    return n / dt, dt / (n // batch) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        runs = [enqueue_cost(d, None, 20000) for _ in range(3)]
        print(f"record_score enqueue, tight loop: p50 {statistics.median(r[0] for r in runs):.2f} µs"
              f"  p99 {statistics.median(r[1] for r in runs):.2f} µs")
        p50, p99 = enqueue_cost(d, 2000.0, 4000)
        print(f"record_score enqueue, paced 2000/s: p50 {p50:.2f} µs  p99 {p99:.2f} µs")
        t = []
        for _ in range(3):
            t0 = time.perf_counter_ns()
            rec = Recorder(d / f"raw-{len(t)}.db", queue_size=5000, start=False)
            for _ in range(2000):
                rec.record_raw(1.0, "around_alarm", ("ax", "ay", "az"), 25600.0, RAW)
            t.append((time.perf_counter_ns() - t0) / 2000 / 1e3)
            rec.close()
        print(f"record_raw enqueue (1024x3 float32, copied): {statistics.median(t):.2f} µs/call")

        for batch in (1, 100, 256):  # the hot write path's library, measured against the other
            n = 5_000 if batch == 1 else 100_000
            r = statistics.median(direct_executemany(d, n, batch) for _ in range(3))
            su = [sqlite_utils_insert_all(d, n, batch) for _ in range(3)]
            sr = statistics.median(x[0] for x in su)
            print(f"scores, {batch}/transaction (no queue): sqlite3 Buffer.write {r:,.0f} rows/s "
                  f"({batch / r * 1e6:.1f} µs/transaction) | sqlite-utils insert_all "
                  f"{sr:,.0f} rows/s ({statistics.median(x[1] for x in su):.1f} µs/transaction)"
                  f" = {r / sr:.1f}x")
        res = [writer_throughput(d, 100_000, raw=False) for _ in range(3)]
        st = res[1][1]
        print(f"writer throughput, scores + 40 float32 features: "
              f"{statistics.median(r[0] for r in res):,.0f} rows/s; commit p50 "
              f"{st['commit_ms']['p50']:.2f} ms p99 {st['commit_ms']['p99']:.2f} ms "
              f"max {st['commit_ms']['max']:.1f} ms, {st['commit_ms']['over_5ms']}/"
              f"{st['commit_ms']['n']} commits > 5 ms (256 rows/commit)")
        res = [writer_throughput(d, 50_000, raw=False, busy_thread=True) for _ in range(3)]
        c = res[1][1]["commit_ms"]
        print(f"  same while another thread spins in Python: "
              f"{statistics.median(r[0] for r in res):,.0f} rows/s; commit p50 {c['p50']:.2f} ms "
              f"p99 {c['p99']:.2f} ms")
        for pages in (1000, 200):
            res = [writer_throughput(d, 100_000, raw=False, wal_pages=pages) for _ in range(3)]
            c = res[1][1]["commit_ms"]
            print(f"  same with wal_autocheckpoint={pages} pages: "
                  f"{statistics.median(r[0] for r in res):,.0f} rows/s; commit p99 {c['p99']:.2f} "
                  f"ms max {c['max']:.1f} ms, {c['over_5ms']}/{c['n']} commits > 5 ms")
        res = [writer_throughput(d, 3000, raw=True) for _ in range(3)]
        print(f"writer throughput, raw windows 1024x3 float32: "
              f"{statistics.median(r[0] for r in res):,.0f} rows/s "
              f"({statistics.median(r[0] for r in res) * RAW.nbytes / 1e6:.0f} MB/s)")

        st = sustained(d, 2000.0, 6.0)
        c = st["commit_ms"]
        print(f"sustained 2000 scores/s for 6 s: {st['commits']} commits, p50 {c['p50']:.2f} ms "
              f"p99 {c['p99']:.2f} ms max {c['max']:.1f} ms, {c['over_5ms']} > 5 ms; idle PASSIVE checkpoints "
              f"{st['checkpoint_ms']['n']} (max {st['checkpoint_ms']['max'] or 0:.1f} ms); "
              f"dropped {sum(st['dropped'].values())}")


if __name__ == "__main__":
    main()
