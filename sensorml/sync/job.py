"""``sensorml sync``: ship the gateway's buffer to the cloud store, exactly once.

A separate process from the gateway. Each run opens the buffer (WAL: it reads while the
gateway writes; every transaction here is one short SELECT or UPDATE), and uploads
unsynced rows table by table in ``SYNC_ORDER`` (events, labels, scores with features,
raw windows), oldest first, as :mod:`sensorml.sync.batch` files named by
:func:`~sensorml.sync.batch.batch_name`. Then it runs the plug-in steps and writes the
heartbeat ``status/<device>.json``.

Exactly once at the lake, whatever fails when:

1. the batch's name and row ids are noted in the buffer
   (:meth:`~sensorml.buffer.queries.BufferQueries.note_pending_batch`) *before* the PUT;
2. the store confirms the PUT (file: rename done; S3: 200 OK);
3. only then the rows get ``synced_at`` and the note is cleared, in one transaction
   (:meth:`~sensorml.buffer.queries.BufferQueries.confirm_batch`).

A run that finds a pending note (the previous one died between 1 and 3) first settles
it: if the object exists, the rows are just marked; else the same rows are uploaded
again under the same name. So a crash, a dropped connection or a power cut leaves at
most one identical object per batch; a row never appears in two batches.

Offline: a failed run backs off (doubling up to ``max_backoff_s``, with jitter) and never
spins; rows stay in the buffer, whose own retention decides what goes when it is full.
Bandwidth: ``max_bytes_per_run`` stops a run before the batch that would pass it (the
first batch of a run always goes, so progress never stalls); ``max_bytes_per_s`` paces
the PUTs. ``upload_raw = false`` keeps raw samples on site.

Clocks: durations and the pace use ``monotonic`` (a wall clock stepped back by NTP is no
reason to wait); ``clock`` (the wall clock) only stamps. Until the wall clock is plausible
(``clock_is_set``: not before 2024-01-01) the heartbeat says ``clock.set: false``, and
batches whose first row was recorded then go under the day ``0000/00/00``.

Plug-in steps (the download side, :mod:`sensorml.bundles.staging`, hooks in here): a step is a
callable ``step(job: SyncJob) -> dict | None`` run after the upload of every run, with
``job.store``, ``job.device``, ``job.config`` (the ``GatewayConfig`` or None) and
``job.state_dir`` at hand. What it returns appears in the heartbeat under
``steps.<step name>``; an exception is logged and reported there, and does not stop the
upload. :func:`default_steps` asks ``sensorml.bundles.fetch.sync_steps(config)`` for them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import PendingBatch, Row
from sensorml.buffer.schema import SYNC_ORDER
from sensorml.errors import SensormlError, StoreError
from sensorml.ids import check_device_id
from sensorml.sync.batch import CLOCK_FLOOR, batch_name, clock_is_set, encode_batch
from sensorml.sync.stores import Store, open_store

__all__ = ["SyncFailed", "SyncJob", "Step", "default_steps", "lower_priority", "run_sync"]

log = logging.getLogger("sensorml.sync.job")
Step = Callable[["SyncJob"], "dict | None"]


class SyncJob:
    """One gateway's upload job. ``run_once()`` does one pass; ``run_forever()`` loops."""

    def __init__(self, buffer_path: str | Path, store: Store, device: str, *,
                 upload_raw: bool = True, batch_rows: int = 5000, batch_bytes: int = 4 << 20,
                 max_bytes_per_run: int = 0, max_bytes_per_s: float = 0.0,
                 state_dir: str | Path | None = None, bundle: str | Path | None = None,
                 status_window_s: float = 3600.0, steps: Sequence[Step] = (),
                 config: Any = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 stop: threading.Event | None = None, max_backoff_s: float = 900.0) -> None:
        self.buffer_path = Path(buffer_path)
        self.store, self.config = store, config
        self.device = check_device_id(device, "sync: device", StoreError)
        self.upload_raw = upload_raw
        self.batch_rows, self.batch_bytes = max(1, int(batch_rows)), int(batch_bytes)
        self.max_bytes_per_run, self.max_bytes_per_s = int(max_bytes_per_run), float(max_bytes_per_s)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.bundle = Path(bundle) if bundle else None
        self.status_window_s = status_window_s
        self.steps = list(steps)
        self.clock, self.monotonic = clock, monotonic  # timestamps; durations and pace
        self.stop = stop or threading.Event()
        self.max_backoff_s = max_backoff_s
        self.runs = self.failures = 0
        self.uploaded = dict.fromkeys(SYNC_ORDER, 0)
        self.bytes_sent = self.batches = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, cfg: Any, *, store: Store | None = None,
                    steps: Sequence[Step] | None = None, **kw: Any) -> SyncJob:
        """A job for a loaded ``GatewayConfig`` (its ``[sync]`` table)."""
        s = cfg.sync
        if store is None:
            store = open_store(s.store, endpoint=s.endpoint, region=s.region,
                               credentials=s.credentials)
        return cls(cfg.buffer.path, store, cfg.device_id, upload_raw=s.upload_raw,
                   batch_rows=s.batch_rows, max_bytes_per_run=s.max_bytes_per_run,
                   max_bytes_per_s=s.max_bytes_per_s, state_dir=cfg.state_dir,
                   bundle=cfg.model.bundle, status_window_s=s.status_window_s,
                   steps=default_steps(cfg) if steps is None else steps, config=cfg, **kw)

    # ---------------------------------------------------------------- a run
    def run_once(self) -> dict:
        """Upload what is unsynced, run the steps, send the heartbeat; returns a report.

        Raises :class:`SyncFailed` (with the run's ``report``) when the upload or the
        heartbeat failed; rows not confirmed stay unsynced for the next run.
        """
        if not self.buffer_path.exists():
            raise StoreError(f"{self.buffer_path}: no buffer here (has the gateway run?)")
        self.runs += 1
        t0, m0 = self.clock(), self.monotonic()
        report: dict[str, Any] = {"t": t0, "uploaded": {}, "batches": 0, "bytes": 0,
                                  "capped": False, "error": None}
        with _RunLock(self.buffer_path), BufferQueries.open(self.buffer_path,
                                                            clock=self.clock) as buf:
            try:
                self._upload(buf, report, m0)
                self.last_ok = self.clock()
                self.last_error = None
            except (SensormlError, OSError) as e:
                self.failures += 1
                self.last_error = report["error"] = str(e)
            report["steps"] = self._run_steps()
            try:
                self._heartbeat(buf, report)
            except (SensormlError, OSError) as e:
                report["heartbeat_error"] = str(e)
                if report["error"] is None:  # the store went away after the upload
                    self.failures += 1
                    self.last_error = report["error"] = str(e)
        report["seconds"] = round(self.monotonic() - m0, 3)
        if report["error"]:
            raise SyncFailed(report)
        return report

    def _upload(self, buf: BufferQueries, report: dict, m0: float) -> None:
        for table in SYNC_ORDER:
            if table == "raw_windows" and not self.upload_raw:
                self._settle(buf, table, report)  # a batch begun before the setting changed
                continue
            if not self._settle(buf, table, report):
                return
            while not self.stop.is_set():
                rows = self._select(buf, table)
                if not rows:
                    break
                data, head = encode_batch(self.device, table, rows)
                cap = self.max_bytes_per_run
                if cap and report["bytes"] and report["bytes"] + len(data) > cap:
                    report["capped"] = True
                    return
                name = batch_name(head)
                ids = [r.id for r in rows]
                buf.note_pending_batch(table, PendingBatch(name, tuple(ids)))
                self.store.put(name, data)
                self._confirmed(buf, table, ids, len(data), report)
                self._pace(report, m0)

    def _select(self, buf: BufferQueries, table: str) -> list[Row]:
        if table != "raw_windows":
            return buf.unsynced(table, self.batch_rows)
        rows = buf.unsynced(table, max(1, self.batch_rows // 10))
        total, keep = 0, []
        for r in rows:  # whole windows up to batch_bytes (at least one)
            total += len(r.data)
            if keep and total > self.batch_bytes:
                break
            keep.append(r)
        return keep

    def _settle(self, buf: BufferQueries, table: str, report: dict) -> bool:
        """Finish a batch a previous run began (see the module docstring)."""
        pending = buf.pending_batch(table)
        if pending is None:
            return True
        name, ids = pending.name, list(pending.ids)
        if self.store.exists(name):
            log.info("sync: %s was stored by an interrupted run; marking its rows", name)
            self._confirmed(buf, table, ids, 0, report)
            return True
        rows = buf.rows_by_id(table, ids)
        if not rows:  # evicted before they could be sent
            buf.confirm_batch(table, [])
            return True
        bid = name.rsplit("/", 1)[1].split(".", 1)[0]
        data, _ = encode_batch(self.device, table, rows, bid=bid)
        self.store.put(name, data)
        self._confirmed(buf, table, ids, len(data), report)
        return True

    def _confirmed(self, buf: BufferQueries, table: str, ids: list[int], nbytes: int,
                   report: dict) -> None:
        n = buf.confirm_batch(table, ids, self.clock())
        report["uploaded"][table] = report["uploaded"].get(table, 0) + n
        report["bytes"] += nbytes
        report["batches"] += 1
        self.uploaded[table] += n
        self.bytes_sent += nbytes
        self.batches += 1

    def _pace(self, report: dict, m0: float) -> None:
        if self.max_bytes_per_s > 0:  # on the monotonic clock: a wall-clock step is no wait
            ahead = report["bytes"] / self.max_bytes_per_s - (self.monotonic() - m0)
            if ahead > 0:
                self.stop.wait(ahead)

    def _run_steps(self) -> dict:
        out = {}
        for step in self.steps:
            name = getattr(step, "name", None) or getattr(step, "__name__", type(step).__name__)
            try:
                out[name] = step(self)
            except Exception as e:  # noqa: BLE001 - a step's failure must not stop uploads
                log.warning("sync step %s failed: %s", name, e)
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        return out

    def _heartbeat(self, buf: BufferQueries, report: dict) -> None:
        from sensorml import __version__
        from sensorml.sync.heartbeat import heartbeat_extra

        now = self.clock()
        counts = buf.counts()
        hb = {"device": self.device, "t": now, "sensorml": __version__,
              **heartbeat_extra(buf, now=now, window_s=self.status_window_s,
                                state_dir=self.state_dir, bundle=self.bundle),
              "sync": {"last_ok": self.last_ok, "last_error": self.last_error,
                       "runs": self.runs, "failures": self.failures,
                       "uploaded_rows": dict(self.uploaded), "uploaded_bytes": self.bytes_sent,
                       "batches": self.batches, "last_run": {k: report[k] for k in (
                           "uploaded", "batches", "bytes", "capped")}},
              "backlog": {t: c.unsynced for t, c in counts.items()},
              "rows": {t: c.rows for t, c in counts.items()},
              "upload_raw": self.upload_raw, "buffer": {"evicted": buf.evicted()},
              "clock": {"set": clock_is_set(now),
                        "floor": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(CLOCK_FLOOR))},
              "steps": report.get("steps", {})}
        self.store.put(f"status/{self.device}.json",
                       json.dumps(hb, indent=1, default=str).encode())

    # ----------------------------------------------------------------- loop
    def run_forever(self, every_s: float) -> None:
        """Run every *every_s* until ``stop`` is set; after failures back off (doubling,
        jittered, at most ``max_backoff_s``). Never raises for a failed run."""
        fails = 0
        while not self.stop.is_set():
            try:
                rep = self.run_once()
                fails = 0
                log.info("sync: %d batches, %d bytes, uploaded %s%s", rep["batches"],
                         rep["bytes"], rep["uploaded"], " (capped)" if rep["capped"] else "")
                delay = every_s
            except SensormlError as e:
                fails += 1
                delay = min(self.max_backoff_s, every_s * 2 ** min(fails - 1, 16))
                delay *= random.uniform(0.8, 1.2)
                log.warning("sync failed (%s); retrying in %.0f s", e, delay)
            self.stop.wait(delay)


class SyncFailed(StoreError):
    """A run did not finish its upload; ``report`` says what it did before the error."""

    def __init__(self, report: dict) -> None:
        super().__init__(report["error"])
        self.report = report


class _RunLock:
    """One sync at a time per buffer (a timer run and a manual one must not interleave)."""

    def __init__(self, buffer_path: Path) -> None:
        self.path = buffer_path.with_name(buffer_path.name + ".sync-lock")
        self.fd: int | None = None

    def __enter__(self) -> _RunLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StoreError(f"{self.path}: another sync is running for this buffer") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


def default_steps(cfg: Any) -> list[Step]:
    """The steps ``sensorml sync`` runs: ``sensorml.bundles.fetch.sync_steps(cfg)``."""
    from sensorml.bundles.fetch import sync_steps

    return list(sync_steps(cfg))


def lower_priority(nice: int = 10) -> None:
    """Make this process yield the CPU to the gateway (best effort, ``nice`` +10)."""
    try:
        os.nice(nice)
    except OSError:
        pass


def run_sync(cfg: Any, *, every_s: float | None = None, once: bool = False,
             stop: threading.Event | None = None) -> int:
    """The ``sensorml sync`` command: one run (exit 1 if it failed) or a loop, at a
    lower CPU priority than the gateway."""
    lower_priority()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the batch, then exit 0
    job = SyncJob.from_config(cfg, stop=stop)
    if once:
        try:
            rep = job.run_once()
        except SyncFailed as e:
            print(json.dumps(e.report, default=str))
            print(f"sensorml sync: failed: {e} (rows not confirmed stay in the buffer for "
                  "the next run)", file=sys.stderr)
            return 1
        print(json.dumps(rep, default=str))
        return 0
    job.run_forever(cfg.sync.every_s if every_s is None else every_s)
    return 0
