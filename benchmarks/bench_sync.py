"""Sync: upload volume per hour of operation, drain rate of a backlog, cost to the gateway.

1. One hour of a 3 × 25.6 kHz gateway as buffer rows: a score row with 45 real features
   (the edge's extractor on the simulated pump, hop 512 = one window per 20 ms), one
   sampled raw window in ``raw_sample_every`` = 600, and 6 alarm episodes of 2 s whose
   every window's raw samples are kept (as the fast path does). Synced to a ``file://``
   store; bytes uploaded against the raw bytes produced (float32 samples), target ≤ 5 %.
2. Sync throughput (rows/s) draining that backlog (4 h of it; ``--day`` for 24 h).
3. The recorder's write throughput with a sync process looping beside it (every 0.2 s,
   at nice +10 as ``sensorml sync`` runs) against without, medians of 5 alternated runs;
   target ≥ 0.95.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_bridge.sim.machine import Machine
from sensorml.buffer.db import Buffer
from sensorml.buffer.recorder import Recorder
from sensorml.edge.features import FeatureExtractor, FeatureSpec
from sensorml.sync.job import SyncJob
from sensorml.sync.stores import FileStore

RATE, CH, WINDOW, HOP = 25600, 3, 1024, 512
WPS = RATE / HOP  # windows per second (50)
T0 = 1.764e9


def real_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    spec = FeatureSpec.from_dict(dict(channels=["ax", "ay", "az"], sample_rate=RATE,
                                      window=WINDOW, hop=HOP))
    x = Machine("pump", rate=RATE, seed=1).generate(n * HOP + WINDOW)
    ext = FeatureExtractor(spec)
    feats = np.stack([ext(x[i * HOP:i * HOP + WINDOW]) for i in range(n)]).astype("<f4")
    return feats, x[:WINDOW * 64].reshape(64, WINDOW, CH)


def fill_hours(db: Path, hours: float, feats: np.ndarray, raws: np.ndarray,
               raw_every: int = 600, alarms_per_h: int = 6, alarm_s: float = 2.0) -> dict:
    n = int(hours * 3600 * WPS)
    alarm_windows = set()
    rng = np.random.default_rng(0)
    for start in rng.integers(0, n - int(alarm_s * WPS), int(alarms_per_h * hours)):
        alarm_windows.update(range(int(start), int(start + alarm_s * WPS)))
    chan = '["ax", "ay", "az"]'
    out = {"scores": n, "raw_sample": 0, "raw_alarm": 0, "events": 0}
    with Buffer(db, device="gw1", max_bytes=16 << 30) as b:
        for k in range(0, n, 20000):
            sc, rw, ev = [], [], []
            for i in range(k, min(n, k + 20000)):
                t = T0 + i / WPS
                alarm = i in alarm_windows
                sc.append((t, i, 5.0 if alarm else 0.5, 2 if alarm else 0, "1",
                           feats[i % len(feats)].tobytes()))
                if alarm or i % raw_every == 0:
                    reason = "around_alarm" if alarm else "sample"
                    rw.append((t, reason, 2 if alarm else 3, chan, float(RATE), "<f4",
                               f"[{WINDOW}, {CH}]", raws[i % len(raws)].tobytes()))
                    out["raw_alarm" if alarm else "raw_sample"] += 1
                    if alarm and i - 1 not in alarm_windows:
                        ev.append(b.event_row("alarm", {"score": 5.0, "window_seq": i}, t))
                        out["events"] += 1
            b.write(events=ev, scores=sc, raws=rw, enforce=False)
    return out


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "ingest" in p.parts)


def volume_and_throughput(hours: float) -> None:
    feats, raws = real_features(3000)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        rows = fill_hours(d / "h1.db", 1.0, feats, raws)
        store = FileStore(d / "cloud")
        t = time.perf_counter()
        SyncJob(d / "h1.db", store, "gw1").run_once()
        dt = time.perf_counter() - t
        up = store_bytes(d / "cloud")
        raw = RATE * CH * 4 * 3600
        n = rows["scores"] + rows["raw_sample"] + rows["raw_alarm"] + rows["events"]
        print(f"one hour: {rows['scores']} score rows (45 features), {rows['raw_sample']} sampled "
              f"+ {rows['raw_alarm']} alarm raw windows, {rows['events']} alarm events")
        print(f"  uploaded {up / 1e6:.1f} MB of {raw / 1e6:.0f} MB raw samples produced = "
              f"{100 * up / raw:.2f} % (target <= 5 %), every alarm window's raw included")
        by = {}
        for p in (d / "cloud").rglob("*.smlb.gz"):
            tab = p.name.split("-")[0]
            by[tab] = by.get(tab, 0) + p.stat().st_size
        print("  by table: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(by.items())))
        print(f"  synced in {dt:.1f} s ({n / dt:,.0f} rows/s incl. raw, fsync on)")
        up_norm = fill_hours(d / "h2.db", 1.0, feats, raws, alarms_per_h=0)
        s2 = FileStore(d / "cloud2")
        SyncJob(d / "h2.db", s2, "gw1", upload_raw=False).run_once()
        print(f"  upload_raw = false, no alarms: {store_bytes(d / 'cloud2') / 1e6:.1f} MB "
              f"({100 * store_bytes(d / 'cloud2') / raw:.2f} %), {up_norm['scores']} rows")

        db = d / "backlog.db"
        t = time.perf_counter()
        rows = fill_hours(db, hours, feats, raws)
        fill = time.perf_counter() - t
        n = sum(rows.values())
        store = FileStore(d / "cloud3")
        t = time.perf_counter()
        SyncJob(db, store, "gw1").run_once()
        dt = time.perf_counter() - t
        print(f"backlog of {hours:g} h ({n:,} rows, buffer {db.stat().st_size / 1e6:.0f} MB, "
              f"filled in {fill:.0f} s): drained in {dt:.1f} s = {n / dt:,.0f} rows/s; "
              f"a day's backlog ({int(n * 24 / hours):,} rows) drains in ~{dt * 24 / hours:.0f} s")


SYNC_LOOP = """
import sys, threading
from sensorml.sync.stores import FileStore
from sensorml.sync.job import SyncJob, lower_priority
lower_priority()  # as `sensorml sync` does
job = SyncJob(sys.argv[1], FileStore(sys.argv[2], fsync=True), "gw1")
print("ready", flush=True)
job.run_forever(0.2)
"""


def recorder_rate(db: Path, n: int, feats: np.ndarray, raw: np.ndarray) -> float:
    rec = Recorder(db, device="gw1", queue_size=20000)
    t = time.perf_counter()
    for i in range(n):
        rec.record_score(T0 + i / WPS, i, 0.5, 0, "1", feats[i % len(feats)])
        if i % 60 == 0:
            rec.record_raw(T0 + i / WPS, "sample", ("ax", "ay", "az"), RATE, raw)
        if i % 2000 == 1999:  # as fast as the writer keeps up, without overflowing
            rec.flush(30)
    rec.flush(60)
    dt = time.perf_counter() - t
    st = rec.stats()
    rec.close()
    dropped = sum(st["dropped"].values())
    assert dropped == 0, st["dropped"]
    return n / dt


def recorder_with_and_without(n: int = 60000, runs: int = 5) -> None:
    feats, raws = real_features(500)
    alone, beside = [], []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for r in range(runs):
            Buffer(d / f"a{r}.db", device="gw1").close()
            alone.append(recorder_rate(d / f"a{r}.db", n, feats, raws[0]))
            db = d / f"b{r}.db"
            Buffer(db, device="gw1").close()
            p = subprocess.Popen([sys.executable, "-c", SYNC_LOOP, str(db), str(d / f"c{r}")],
                                 stdout=subprocess.PIPE, text=True)
            p.stdout.readline()
            try:
                beside.append(recorder_rate(db, n, feats, raws[0]))
            finally:
                p.terminate()
                p.wait(10)
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"recorder (scores + 1 raw/60) alone {a:,.0f} rows/s, with sync looping beside it "
          f"{b:,.0f} rows/s: ratio {b / a:.2f} (target >= 0.95; the gateway needs 50 rows/s)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--recorder" not in argv:
        volume_and_throughput(24.0 if "--day" in argv else 4.0)
    recorder_with_and_without()


if __name__ == "__main__":
    main()
