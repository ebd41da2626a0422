"""The sync job against a real folder store: exactly once at the lake whatever fails."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.recorder import Recorder
from sensorml.sync.batch import decode_batch
from sensorml.sync.job import SyncFailed, SyncJob
from sensorml.sync.stores import CloudError, FileStore, Store

T0 = 1.764e9


def fill(path: Path, *, scores: int = 0, raws: int = 0, events: int = 0, start: float = T0,
         seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with Buffer(path, device="gw1") as b:
        ev = [b.event_row("alarm" if i % 2 else "reload", {"i": i}, start + i) for i in range(events)]
        sc = [(start + i * 0.02, i, float(rng.random()), int(i % 50 == 0) * 2, "1",
               rng.normal(size=45).astype("<f4").tobytes()) for i in range(scores)]
        rw = [(start + i, "around_alarm" if i % 5 == 0 else "sample", 2 if i % 5 == 0 else 3,
               '["ax", "ay", "az"]', 25600.0, "<f4", "[256, 3]",
               rng.normal(size=(256, 3)).astype("<f4").tobytes()) for i in range(raws)]
        b.write(events=ev, scores=sc, raws=rw, enforce=False)


def lake(store: Store) -> Counter:
    """(table, row id) -> how many times it is in the store's batches."""
    n: Counter = Counter()
    for name in store.list("ingest/") + store.list("labels/"):
        h, c = decode_batch(store.get(name), name)
        n.update((h["table"], int(i)) for i in c["id"])
    return n


def all_rows(path: Path) -> set:
    """(table, row id) of every row in the file, read as another process would."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(t, i) for t in ("events", "labels", "scores", "raw_windows")
                for (i,) in c.execute(f"SELECT id FROM {t}")}
    finally:
        c.close()


def backlog(path: Path) -> dict:
    with BufferQueries.open(path, readonly=True) as q:
        return {t: c.unsynced for t, c in q.counts().items()}


def test_one_run_uploads_everything_in_priority_order_and_sends_a_heartbeat(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=1200, raws=12, events=6)
    with BufferQueries.open(db) as q:
        q.add_label(2, "true_fault", "bearing", "ana", t=T0 + 30)
    store = FileStore(tmp_path / "cloud", fsync=False)
    job = SyncJob(db, store, "gw1", batch_rows=500, clock=lambda: T0 + 60)
    rep = job.run_once()
    assert rep["uploaded"] == {"events": 6, "labels": 1, "scores": 1200, "raw_windows": 12}
    assert list(rep["uploaded"]) == ["events", "labels", "scores", "raw_windows"]
    assert sorted(lake(store).items()) == sorted((k, 1) for k in all_rows(db))
    assert backlog(db) == dict.fromkeys(("events", "labels", "scores", "raw_windows"), 0)
    assert store.list("labels/") == ["labels/gw1/2025/11/24/labels-000000000001-000000000001.smlb.gz"]
    hb = json.loads(store.get("status/gw1.json"))
    assert hb["backlog"] == dict.fromkeys(("events", "labels", "scores", "raw_windows"), 0)
    assert hb["sync"]["uploaded_rows"]["scores"] == 1200 and hb["model"]["version"] == "1"
    assert hb["anomaly_rate"]["windows"] == 1200
    assert hb["anomaly_rate"]["alarm_or_worse"] == pytest.approx(24 / 1200)
    assert job.run_once()["batches"] == 0  # nothing new: nothing sent twice


def test_upload_raw_false_keeps_raw_samples_on_site(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=50, raws=5, events=2)
    store = FileStore(tmp_path / "cloud", fsync=False)
    SyncJob(db, store, "gw1", upload_raw=False).run_once()
    assert not [k for k in lake(store) if k[0] == "raw_windows"]
    assert backlog(db)["raw_windows"] == 5 and backlog(db)["scores"] == 0
    assert json.loads(store.get("status/gw1.json"))["upload_raw"] is False


class Flaky(Store):
    """Wraps a real store; fails at random: before the PUT reaches the store, or after it
    did (the confirmation is lost: a dropped connection), or on exists/heartbeat."""

    def __init__(self, inner: Store, seed: int, p: float = 0.3) -> None:
        self.inner, self.rng, self.p, self.url = inner, random.Random(seed), p, inner.url
        self.failures = 0

    def _maybe(self) -> None:
        if self.rng.random() < self.p:
            self.failures += 1
            raise CloudError("injected: connection reset")

    def put(self, name, data):
        self._maybe()
        self.inner.put(name, data)
        self._maybe()

    def exists(self, name):
        self._maybe()
        return self.inner.exists(name)

    def get(self, name, **kw):
        return self.inner.get(name, **kw)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def delete(self, name):
        self.inner.delete(name)


@pytest.mark.parametrize("seed", range(4))
def test_interrupted_uploads_then_reruns_give_every_row_exactly_once(tmp_path, seed):
    db = tmp_path / "buffer.db"
    fill(db, scores=900, raws=20, events=10, seed=seed)
    inner = FileStore(tmp_path / "cloud", fsync=False)
    flaky = Flaky(inner, seed)
    job = SyncJob(db, flaky, "gw1", batch_rows=100)
    for k in range(200):
        if k % 7 == 3:  # the gateway keeps writing between runs
            fill(db, scores=37, events=1, start=T0 + 100 + k, seed=k)
        try:
            job.run_once()
        except SyncFailed:
            continue
        if k > 30 and not any(backlog(db).values()):
            break
    assert flaky.failures > 5
    assert not any(backlog(db).values())
    counts = lake(inner)
    assert set(counts) == all_rows(db) and set(counts.values()) == {1}


def test_bandwidth_cap_per_run(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=3000)
    store = FileStore(tmp_path / "cloud", fsync=False)
    job = SyncJob(db, store, "gw1", batch_rows=250, max_bytes_per_run=120_000)
    sizes = []
    while True:
        rep = job.run_once()
        if not rep["batches"]:
            break
        sizes.append(rep["bytes"])
    assert len(sizes) > 2 and max(sizes) <= 120_000
    assert sum(lake(store).values()) == 3000


class RecordingStop(threading.Event):
    """Records the waits of the job's loop instead of waiting (a fake clock for backoff)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.n = n

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


def test_offline_backs_off_without_spinning_and_recovers(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=10)
    inner = FileStore(tmp_path / "cloud", fsync=False)
    down = Flaky(inner, 0, p=1.0)
    stop = RecordingStop(8)
    job = SyncJob(db, down, "gw1", stop=stop, max_backoff_s=400)
    job.run_forever(60)
    nominal = [min(400, 60 * 2 ** k) for k in range(8)]  # doubling up to the cap, +-20 % jitter
    assert all(0.8 * n <= w <= 1.2 * n for w, n in zip(stop.waits, nominal)), stop.waits
    down.p = 0.0  # the store is back
    stop2 = RecordingStop(2)
    job.stop = stop2
    job.run_forever(60)
    assert stop2.waits == [60, 60] and sum(lake(inner).values()) == 10


def _config(tmp_path: Path, store: Path, **sync) -> Path:
    extra = "".join(f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n"
                    for k, v in sync.items())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'device_id = "gw1"\nstate_dir = "{tmp_path / "state"}"\n'
                   '[source]\nurl = "sim://pump"\n'
                   f'[buffer]\npath = "{tmp_path / "buffer.db"}"\n'
                   f'[sync]\nstore = "{store.as_uri()}"\n{extra}')
    return cfg


def test_sync_process_killed_at_random_moments_loses_and_doubles_nothing(tmp_path):
    db = tmp_path / "buffer.db"
    # ~3000 small batches: long enough an upload that random kills land inside it even
    # on an idle machine (one batch takes ~0.5 ms to write here)
    fill(db, scores=60000, raws=40, events=20)
    cfg = _config(tmp_path, tmp_path / "cloud", batch_rows=20)
    rng = random.Random(5)
    cmd = [sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg), "--every", "1s"]
    mid_upload_kills = 0
    for _ in range(20):
        before = backlog(db)["scores"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=rng.uniform(0.3, 1.2))  # dies of SIGKILL at this random moment
        except subprocess.TimeoutExpired:
            p.kill()
        p.wait()
        after = backlog(db)["scores"]
        mid_upload_kills += 0 < after < before
        if mid_upload_kills >= 5 or after == 0:
            break
    assert mid_upload_kills >= 1  # the kills came in the middle of the upload
    r = subprocess.run([*cmd[:-2], "--once"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["error"] is None
    store = FileStore(tmp_path / "cloud")
    counts = lake(store)
    assert set(counts) == all_rows(db) and set(counts.values()) == {1}
    assert not any(backlog(db).values())


def test_recorder_and_sync_together_drop_nothing(tmp_path):
    """The gateway's recorder at ~2,500 windows/s while sync runs beside it in a loop."""
    db = tmp_path / "buffer.db"
    rec = Recorder(db, device="gw1", queue_size=2000, flush_interval_s=0.05)
    store = FileStore(tmp_path / "cloud", fsync=False)
    stop = threading.Event()
    job = SyncJob(db, store, "gw1", batch_rows=500, stop=stop)
    th = threading.Thread(target=job.run_forever, args=(0.05,), daemon=True)
    th.start()
    feats = np.random.default_rng(0).normal(size=45).astype("<f4")
    tick = threading.Event()
    for i in range(5000):
        rec.record_score(T0 + i * 0.02, i, 0.1, 0, "1", feats)
        if i % 250 == 0:
            rec.record_raw(T0 + i * 0.02, "sample", ("ax", "ay", "az"), 25600.0,
                           np.zeros((1024, 3), np.float32))
            tick.wait(0.1)  # the rate of a real gateway, in bursts
    assert rec.flush(10)
    stop.set()
    th.join(10)
    rec.close()
    assert rec.stats()["dropped"] == {"events": 0, "scores": 0, "raw_alarm": 0, "raw_sample": 0}
    job.stop = threading.Event()
    job.run_once()
    counts = lake(store)
    assert counts and set(counts.values()) == {1}
    assert {k for k in counts if k[0] == "scores"} == {k for k in all_rows(db) if k[0] == "scores"}


def test_heartbeat_reports_drift_against_the_bundle_fingerprint(tmp_path):
    db = tmp_path / "buffer.db"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)).astype("<f4")
    x[:, 2] += 3.0  # the third feature moved by 3 training standard deviations
    with Buffer(db, device="gw1") as b:
        b.write(scores=[(T0 + i, i, 0.1, 3 if i < 5 else 0, "2", x[i].tobytes())
                        for i in range(500)], enforce=False)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    fp = {n: {"mean": 0.0, "std": 1.0, "min": -4, "max": 4, "p01": -2.33, "p99": 2.33}
          for n in ("rms_ax", "rms_ay", "kurtosis_az")}
    (bundle / "manifest.json").write_text(json.dumps({"version": "2", "fingerprint": fp}))
    store = FileStore(tmp_path / "cloud", fsync=False)
    SyncJob(db, store, "gw1", bundle=bundle, status_window_s=3600, clock=lambda: T0 + 600).run_once()
    hb = json.loads(store.get("status/gw1.json"))
    d = hb["drift"]
    assert d["reference"] == "2" and d["windows"] == 500 and d["features"] == 3
    assert d["top"][0]["feature"] == "kurtosis_az" and d["top"][0]["z"] == pytest.approx(3, abs=0.2)
    assert d["top"][0]["out"] > 0.6 and d["top"][1]["out"] < 0.05
    assert hb["anomaly_rate"]["windows"] == 500 and hb["anomaly_rate"]["alarm_or_worse"] == 0.01
    assert hb["model"] == {"source": "buffer", "version": "2", "seen_at": T0 + 499}


def test_bytes_per_second_cap_paces_the_puts(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=2000)
    stop = RecordingStop(10_000)
    now = [0.0]
    job = SyncJob(db, FileStore(tmp_path / "cloud", fsync=False), "gw1", batch_rows=200,
                  max_bytes_per_s=50_000, stop=stop, monotonic=lambda: now[0])
    rep = job.run_once()
    assert rep["batches"] == 10
    # with a frozen clock, the run waits until the time the bytes sent so far need at 50 kB/s
    assert stop.waits == sorted(stop.waits) and len(stop.waits) == 10
    assert stop.waits[-1] == pytest.approx(rep["bytes"] / 50_000, rel=0.01)


def test_a_wall_clock_step_back_of_an_hour_does_not_stall_paced_sync(tmp_path):
    """NTP steps the wall clock back an hour after the first batch: before, each paced batch
    then waited that hour (the pace was measured on time.time()); the pace is monotonic."""
    db = tmp_path / "buffer.db"
    fill(db, scores=2000)
    stop = RecordingStop(10_000)
    wall = iter([T0] + [T0 - 3600.0] * 1000)  # one reading before the step, then an hour back
    job = SyncJob(db, FileStore(tmp_path / "cloud", fsync=False), "gw1", batch_rows=200,
                  max_bytes_per_s=50_000, stop=stop, clock=lambda: next(wall))
    rep = job.run_once()
    assert rep["batches"] == 10 and not any(backlog(db).values())
    print(f"longest pace wait after the step: {max(stop.waits):.2f} s "
          f"(the bytes at 50 kB/s need {rep['bytes'] / 50_000:.2f} s)")
    # (the waits are recorded, not slept: the real monotonic clock moved a little meanwhile)
    assert 0 < max(stop.waits) <= rep["bytes"] / 50_000


def test_sigterm_ends_the_loop_cleanly(tmp_path):
    db = tmp_path / "buffer.db"
    fill(db, scores=100)
    cfg = _config(tmp_path, tmp_path / "cloud")
    p = subprocess.Popen([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg),
                          "--every", "1h", "--log-format", "text"],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # wait for the first run's log line
        if "sync: " in line and "batches" in line:
            break
    p.terminate()
    assert p.wait(timeout=10) == 0
    assert not any(backlog(db).values())


def test_a_clock_not_set_is_in_the_heartbeat_and_names_no_false_day(tmp_path):
    """A Pi without a real-time clock: rows recorded 40 s after boot in '1970'. The batches
    go under day 0000/00/00, the heartbeat says the clock is not set; once NTP has set it,
    new rows go under their day and the heartbeat says so."""
    db = tmp_path / "buffer.db"
    fill(db, events=3, start=40.0)
    store = FileStore(tmp_path / "cloud", fsync=False)
    now = [45.0]
    job = SyncJob(db, store, "gw1", clock=lambda: now[0])
    job.run_once()
    assert store.list("ingest/") == ["ingest/gw1/0000/00/00/events-000000000001-000000000003.smlb.gz"]
    assert json.loads(store.get("status/gw1.json"))["clock"] == \
        {"set": False, "floor": "2024-01-01T00:00:00Z"}
    now[0] = T0
    fill(db, events=1, start=T0)
    job.run_once()
    assert store.list("ingest/")[-1] == "ingest/gw1/2025/11/24/events-000000000004-000000000004.smlb.gz"
    assert json.loads(store.get("status/gw1.json"))["clock"]["set"] is True
