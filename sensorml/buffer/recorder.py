"""The recorder: a non-blocking front for the buffer, with its own writer thread.

The fast path calls :meth:`Recorder.record_score` / :meth:`~Recorder.record_raw` /
:meth:`~Recorder.record_event`; each appends a tuple to a lane under a lock held for
a few hundred nanoseconds, and never blocks, raises or does I/O. The writer thread
opens the :class:`~sensorml.buffer.db.Buffer` itself (SQLite connections stay in one
thread) and commits batches, one transaction each, every ``flush_interval_s`` or as
soon as ``batch`` rows are waiting.

Lanes, by priority: events (0), scores (1), raw windows around alarms (2), sampled
raw windows (3). Scores and raw windows share ``queue_size`` slots; when they are all
taken, a new item pushes out the oldest queued item of a *lower* priority lane, or is
itself dropped if there is none; either way the drop is counted per lane. Events have
their own lane (``event_lane_size``, a memory safety valve that is never reached in
practice) and are never pushed out by other rows.

Writer errors (e.g. 'database or disk is full') are counted, the buffer evicts and the
batch is retried; after ``max_attempts`` its scores and raw windows are dropped (counted
as ``store_dropped``) and its events are kept for the next batch. On a full filesystem
the events of a failing batch are written on their own first (a few pages, where a batch
of raw windows needs hundreds), and for ``pressure_s`` after the last 'full' error
sampled raw windows are dropped (counted) instead of written, so that events, scores and
alarm windows get the room. Before it comes to that, after each commit the buffer keeps
its free-space reserve (:meth:`Buffer.guard_free_space`) by evicting by priority. At
:meth:`close`, events still unwritten are tried again after an eviction; any that still
cannot be written are counted in ``store_dropped["events"]`` and logged. The thread
never dies of a SQLite error. WAL checkpoints run on the writer thread only: automatic
ones at commit, and a PASSIVE one when the writer is idle.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sensorml.buffer.db import RAW_PRIORITY, TABLES, Buffer, to_json
from sensorml.errors import StoreError
from sensorml.gateway.metrics import Registry

__all__ = ["Recorder", "LANES"]

log = logging.getLogger("sensorml.buffer.recorder")

LANES = ("events", "scores", "raw_alarm", "raw_sample")
_EV, _SC, _RA, _RS = 0, 1, 2, 3


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Recorder:
    """Bounded, non-blocking recording into a :class:`Buffer` at ``buffer_path``.

    ``start=False`` keeps the writer thread parked until :meth:`start` (the queue still
    fills, drops are counted); ``raw_sample_every=N`` keeps one in N ``sample`` raw
    windows (raw windows around alarms are all kept). ``max_bytes`` and
    ``buffer_options`` go to the :class:`Buffer`.
    """

    def __init__(self, buffer_path: str | Path, *, queue_size: int = 10000, batch: int = 256,
                 flush_interval_s: float = 0.2, raw_sample_every: int = 1,
                 max_bytes: int = 256 << 20, device: str | None = None,
                 event_lane_size: int = 100_000, max_attempts: int = 3,
                 idle_checkpoint_s: float = 1.0, pressure_s: float = 5.0,
                 clock: Callable[[], float] = time.time,
                 buffer_options: dict[str, Any] | None = None, start: bool = True) -> None:
        if queue_size < 1 or batch < 1 or raw_sample_every < 1:
            raise StoreError(f"recorder: queue_size ({queue_size}), batch ({batch}) and "
                             f"raw_sample_every ({raw_sample_every}) must be >= 1")
        self.path = Path(buffer_path)
        self.queue_size, self.batch = int(queue_size), int(batch)
        self.flush_interval_s = float(flush_interval_s)
        self.raw_sample_every = int(raw_sample_every)
        self.event_lane_size = int(event_lane_size)
        self.max_attempts = max(1, int(max_attempts))
        self.idle_checkpoint_s = idle_checkpoint_s
        self.pressure_s = float(pressure_s)
        self._pressure_until = float("-inf")  # monotonic; sampled raw windows dropped before
        self.clock = clock
        self._buffer_kw = {"max_bytes": max_bytes, "clock": clock, "device": device,
                           **(buffer_options or {})}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._lanes: tuple[deque, ...] = (deque(), deque(), deque(), deque())
        self._n = 0  # queued scores + raw windows (bounded by queue_size)
        self._enq = [0, 0, 0, 0]  # appended per lane
        self._popped = [0, 0, 0, 0]  # removed per lane (written or pushed out)
        self._committed = [0, 0, 0, 0]  # everything below this index per lane is resolved
        self._sample_calls = 0
        self.dropped = dict.fromkeys(LANES, 0)
        self.store_dropped = dict.fromkeys(LANES, 0)
        self.written = dict.fromkeys(LANES, 0)
        self.errors = 0
        self.last_error: str | None = None
        self.commits = 0
        self.last_commit: float | None = None
        self._commit_ms: deque[float] = deque(maxlen=4096)
        self._checkpoint_ms: deque[float] = deque(maxlen=256)
        self._retry_events: list[tuple] = []
        self._buf_stats: dict[str, Any] = {}
        self._closing = False
        self._closed = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ------------------------------------------------------------ producers
    def record_event(self, kind: str, detail: dict | None = None, t: float | None = None,
                     priority: int = 0) -> None:
        """Queue an event (never pushed out by scores or raw windows)."""
        item = (self.clock() if t is None else t, kind, priority, detail)
        with self._lock:
            if self._closed or len(self._lanes[_EV]) >= self.event_lane_size:
                self.dropped["events"] += 1
                return
            self._lanes[_EV].append(item)
            self._enq[_EV] += 1
        if kind in ("trip", "reset", "alarm", "limit", "watchdog"):
            self._wake.set()  # rare; persist promptly (a restart restores the latch from them)

    def record_score(self, t: float, window_seq: int, score: float, verdict: int,
                     model_version: str | None, features: np.ndarray | None = None) -> None:
        """Queue one window's score; ``features`` is copied as little-endian float32."""
        # Coerce here (~0.1 µs): a numpy scalar would make the whole SQLite batch fail.
        blob = None if features is None else np.asarray(features, dtype="<f4").tobytes()
        mv = None if model_version is None else str(model_version)
        self._put(_SC, (float(t), int(window_seq), float(score), int(verdict), mv, blob))

    def record_raw(self, t: float, reason: str, channels: Sequence[str], rate: float,
                   data: np.ndarray) -> None:
        """Queue a raw window (``reason``: ``around_alarm`` | ``sample``); data is copied."""
        lane = _RA if reason == "around_alarm" else _RS
        if lane == _RS:  # one producer thread (the fast path) calls this: no lock needed
            self._sample_calls += 1
            if (self._sample_calls - 1) % self.raw_sample_every:
                return
        a = np.ascontiguousarray(data)
        reason = "around_alarm" if lane == _RA else "sample"  # anything else counts as sample
        self._put(lane, (float(t), reason, RAW_PRIORITY[reason], channels, float(rate),
                         a.dtype.str, a.shape, a.tobytes()))

    def _put(self, lane: int, item: tuple) -> None:
        with self._lock:
            if self._closed:
                self.dropped[LANES[lane]] += 1
                return
            if self._n >= self.queue_size:
                for victim in (_RS, _RA, _SC):  # lowest priority first
                    if victim > lane and self._lanes[victim]:
                        self._lanes[victim].popleft()
                        self._popped[victim] += 1
                        self.dropped[LANES[victim]] += 1
                        self._n -= 1
                        break
                else:
                    self.dropped[LANES[lane]] += 1
                    return
            self._lanes[lane].append(item)
            self._enq[lane] += 1
            self._n += 1
            full = self._n == self.batch
        if full:
            self._wake.set()

    # ------------------------------------------------------------- control
    def start(self, timeout: float = 30.0) -> None:
        """Start the writer thread and wait until it opened the buffer (idempotent).

        Raises :class:`StoreError` if the buffer cannot be opened.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        if not self._opened.wait(timeout):
            raise StoreError(f"{self.path}: buffer did not open within {timeout} s")
        if self._open_error is not None:
            err = self._open_error
            raise err if isinstance(err, StoreError) else StoreError(f"{self.path}: {err}")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued before this call is committed (or dropped).

        Returns False on timeout or if the writer is not running.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = list(self._enq)
            self._wake.set()
            while any(c < t for c, t in zip(self._committed, target)):
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush, stop the writer and close the buffer (idempotent)."""
        if self._thread is None and not self._closed:
            try:
                self.start()
            except StoreError:
                pass
        self.flush(timeout)
        with self._lock:
            self._closed = self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Queue depth, rows written/dropped per lane, commit latency, errors, buffer."""
        with self._lock:
            queued = {name: len(q) for name, q in zip(LANES, self._lanes)}
            commit_ms = list(self._commit_ms)
            ckpt_ms = list(self._checkpoint_ms)
            out = {"queued": queued, "queued_total": sum(queued.values()),
                   "written": dict(self.written), "dropped": dict(self.dropped),
                   "store_dropped": dict(self.store_dropped), "errors": self.errors,
                   "last_error": self.last_error, "commits": self.commits,
                   "last_commit": self.last_commit,
                   "pending_retry_events": len(self._retry_events),
                   "buffer": dict(self._buf_stats)}
        out["commit_ms"] = {"p50": _percentile(commit_ms, 0.5),
                            "p99": _percentile(commit_ms, 0.99),
                            "max": max(commit_ms, default=None),
                            "over_5ms": sum(ms > 5.0 for ms in commit_ms), "n": len(commit_ms)}
        out["checkpoint_ms"] = {"n": len(ckpt_ms), "max": max(ckpt_ms, default=None)}
        out["alive"] = self._thread is not None and self._thread.is_alive()
        return out

    def register_metrics(self, registry: Registry, prefix: str = "sensorml_recorder") -> None:
        """Expose queue depth, rows written/dropped per lane, errors and buffer evictions
        in a :class:`~sensorml.gateway.metrics.Registry` (read at each render, no fast-path cost)."""
        q = registry.gauge(f"{prefix}_queued", "Rows waiting for the writer.", ("lane",))
        w = registry.counter(f"{prefix}_written_total", "Rows committed to the buffer.", ("lane",))
        d = registry.counter(f"{prefix}_dropped_total",
                             "Rows dropped because the queue was full.", ("lane",))
        for i, lane in enumerate(LANES):
            q.labels(lane=lane).set_function(lambda q=self._lanes[i]: len(q))
            w.labels(lane=lane).set_function(lambda lane=lane: self.written[lane])
            d.labels(lane=lane).set_function(lambda lane=lane: self.dropped[lane])
        sd = registry.counter(f"{prefix}_store_dropped_total",
                              "Rows the buffer could not take (disk full, given up after "
                              "retries, or sampled raw windows giving way).", ("lane",))
        for lane in LANES:
            sd.labels(lane=lane).set_function(lambda lane=lane: self.store_dropped[lane])
        registry.counter(f"{prefix}_errors_total", "Buffer write errors (retried).") \
            .set_function(lambda: self.errors)
        ev = registry.counter(f"{prefix}_evicted_total", "Rows evicted by the size cap.",
                              ("table",))
        for table in TABLES:
            ev.labels(table=table).set_function(
                lambda t=table: self._buf_stats.get("evicted", {}).get(t, 0))
        registry.gauge(f"{prefix}_buffer_bytes", "Live bytes in the buffer file.") \
            .set_function(lambda: self._buf_stats.get("used_bytes", math.nan))
        registry.gauge(f"{prefix}_last_commit_timestamp_seconds", "Time of the last commit.") \
            .set_function(lambda: self.last_commit or math.nan)

    # -------------------------------------------------------------- writer
    def _run(self) -> None:
        try:
            buf = Buffer(self.path, **self._buffer_kw)
        except BaseException as e:  # reported by start()
            self._open_error = e
            self._opened.set()
            return
        self._refresh_stats(buf)
        self._opened.set()
        last_write = time.monotonic()
        dirty = False
        stats_at = 0.0
        try:
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                wrote = self._drain(buf)
                now = time.monotonic()
                if wrote:
                    last_write, dirty = now, True
                elif dirty and now - last_write >= self.idle_checkpoint_s:
                    self._checkpoint(buf)
                    dirty = False
                if wrote:
                    self._guard(buf)
                if wrote or now - stats_at > 1.0:
                    stats_at = now
                    self._refresh_stats(buf)
                    if now >= self._pressure_until:
                        buf.restore_ballast()  # room kept for the next full filesystem
                if self._closing and not any(self._lanes):
                    break
        finally:
            self._final_events(buf)
            self._refresh_stats(buf)
            try:
                buf.close()
            except sqlite3.Error as e:
                log.warning("closing buffer %s: %s", self.path, e)

    def _drain(self, buf: Buffer) -> bool:
        """Write everything queued, batch by batch. Returns True if it wrote anything."""
        wrote = False
        while True:
            with self._lock:
                taken: list[list] = [[], [], [], []]
                room = self.batch
                for lane in (_EV, _SC, _RA, _RS):
                    q = self._lanes[lane]
                    k = min(room, len(q))
                    if k:
                        taken[lane] = [q.popleft() for _ in range(k)]
                        self._popped[lane] += k
                        room -= k
                self._n -= len(taken[_SC]) + len(taken[_RA]) + len(taken[_RS])
                snapshot = list(self._popped)
            if not any(taken) and not self._retry_events:
                with self._cond:
                    self._committed = snapshot
                    self._cond.notify_all()
                return wrote
            try:
                ok = self._commit(buf, taken)
            except Exception as e:  # noqa: BLE001 - a bug or a bad row must not kill the writer
                self._writer_error(buf, e, self.max_attempts)
                with self._lock:
                    for lane in (_SC, _RA, _RS):
                        self.store_dropped[LANES[lane]] += len(taken[lane])
                ok = False
            wrote = True
            with self._cond:
                self._committed = snapshot
                self._cond.notify_all()
            if not ok:  # the store keeps failing: try again next cycle, don't spin
                return wrote

    def _commit(self, buf: Buffer, taken: list[list]) -> bool:
        events = self._retry_events + [self._event_row(buf, it) for it in taken[_EV]]
        self._retry_events = []
        if taken[_RS] and time.monotonic() < self._pressure_until:
            with self._lock:  # the filesystem was full moments ago: room for the rest first
                self.store_dropped["raw_sample"] += len(taken[_RS])
            taken[_RS] = []
        scores = taken[_SC]
        raws = [(t, reason, prio, to_json(list(ch)), float(rate), dt, to_json(list(shape)), data)
                for (t, reason, prio, ch, rate, dt, shape, data) in taken[_RA] + taken[_RS]]
        for attempt in range(1, self.max_attempts + 1):
            t0 = time.perf_counter()
            try:
                buf.write(events, scores, raws)
            except sqlite3.Error as e:
                self._writer_error(buf, e, attempt, keep_events=bool(scores or raws))
                if events and (scores or raws) and "full" in str(e) and self._write_events(
                        buf, events):
                    events = []  # saved on their own; the rest is tried again
                continue
            ms = (time.perf_counter() - t0) * 1e3
            with self._lock:
                self._commit_ms.append(ms)
                self.commits += 1
                self.last_commit = self.clock()
                self.written["events"] += len(events)
                self.written["scores"] += len(scores)
                self.written["raw_alarm"] += len(taken[_RA])
                self.written["raw_sample"] += len(taken[_RS])
            return True
        with self._lock:  # gave up on this batch: keep its events, drop the rest
            self._retry_events = events[-self.event_lane_size:]
            self.store_dropped["events"] += max(0, len(events) - self.event_lane_size)
            self.store_dropped["scores"] += len(scores)
            self.store_dropped["raw_alarm"] += len(taken[_RA])
            self.store_dropped["raw_sample"] += len(taken[_RS])
        return False

    def _write_events(self, buf: Buffer, events: list[tuple]) -> bool:
        """Commit events alone (no eviction pass); True if they are in the buffer."""
        try:
            buf.write(events, enforce=False)
        except sqlite3.Error as e:
            self._writer_error(buf, e, self.max_attempts, keep_events=False)
            return False
        with self._lock:
            self.commits += 1
            self.last_commit = self.clock()
            self.written["events"] += len(events)
        return True

    def _final_events(self, buf: Buffer) -> None:
        """At close: events that could not be written get a few more tries, each after
        an eviction; those that still fail are counted as dropped (never silently)."""
        for _ in range(3):
            if not self._retry_events:
                return
            events, self._retry_events = self._retry_events, []
            if self._write_events(buf, events):
                return
            self._retry_events = events
        n = len(self._retry_events)
        if n:
            with self._lock:
                self.store_dropped["events"] += n
            log.error("buffer %s: %d events could not be written before closing (%s); "
                      "counted as dropped", self.path, n, self.last_error)
            self._retry_events = []

    def _event_row(self, buf: Buffer, item: tuple) -> tuple:
        t, kind, priority, detail = item
        try:
            return buf.event_row(kind, detail, t, priority)
        except Exception as e:  # noqa: BLE001 - a bad detail must not lose the event
            return buf.event_row(kind, {"unencodable_detail": repr(e)}, t, priority)

    def _writer_error(self, buf: Buffer, e: Exception, attempt: int,
                      keep_events: bool = True) -> None:
        msg = f"{type(e).__name__}: {e}"
        with self._lock:
            self.errors += 1
            self.last_error = msg
            n = self.errors
        if n <= 3 or n % 100 == 0:  # don't flood the log while the disk stays full
            log.warning("buffer %s write failed (%d errors so far, attempt %d): %s",
                        self.path, n, attempt, msg)
        if "full" in str(e):
            self._pressure_until = time.monotonic() + self.pressure_s
            if buf.release_ballast():  # room for the eviction and checkpoint below
                log.warning("buffer %s: filesystem full; released the ballast", self.path)
            try:
                buf.checkpoint("TRUNCATE")  # the WAL gives its space back first
            except sqlite3.Error:
                pass
            try:
                # room for scores and raw windows never costs an event; only events do
                buf.enforce_cap(force=True, keep_events=keep_events)
                buf.checkpoint("TRUNCATE")
            except sqlite3.Error as e2:
                log.warning("buffer %s eviction failed: %s", self.path, e2)
        elif attempt < self.max_attempts:
            threading.Event().wait(0.05 * 2 ** attempt)  # back off (e.g. a busy lock)

    def _guard(self, buf: Buffer) -> None:
        """The filesystem is a cap too: evict by priority when its free space runs low,
        and let sampled raw windows give way for ``pressure_s``."""
        try:
            evicted = buf.guard_free_space()
        except sqlite3.Error as e:
            self._writer_error(buf, e, self.max_attempts)
            return
        if evicted:
            self._pressure_until = time.monotonic() + self.pressure_s

    def _checkpoint(self, buf: Buffer) -> None:
        t0 = time.perf_counter()
        try:
            buf.checkpoint("PASSIVE")
        except sqlite3.Error as e:
            log.warning("buffer %s checkpoint failed: %s", self.path, e)
            return
        with self._lock:
            self._checkpoint_ms.append((time.perf_counter() - t0) * 1e3)

    def _refresh_stats(self, buf: Buffer) -> None:
        try:
            s = buf.stats()
        except sqlite3.Error:
            return
        with self._lock:
            self._buf_stats = s
