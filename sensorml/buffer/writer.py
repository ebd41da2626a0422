"""The recorder's writer thread: it opens the :class:`~sensorml.buffer.db.Buffer` itself
(SQLite connections stay in one thread), takes batches from the
:class:`~sensorml.buffer.lanes.Lanes` and commits each in one transaction, every
``flush_interval_s`` or as soon as a batch is waiting.

Writer errors are counted, the buffer evicts and the batch is retried; after
``max_attempts`` its scores and raw windows are dropped (counted as ``store_dropped``)
and its events are kept for the next batch. When the filesystem is full
(:func:`~sensorml.buffer.connection.is_disk_full`) the events of a failing batch are
written on their own first (a few pages, where a batch of raw windows needs hundreds),
and for ``pressure_s`` after the last such error sampled raw windows are dropped
(counted) instead of written, so that events, scores and alarm windows get the room.
Before it comes to that, after each commit the space keeper keeps its free-space reserve
by evicting by priority. At close, events still unwritten are tried again after an
eviction; any that still cannot be written are counted in ``store_dropped["events"]``
and logged. The thread never dies of a SQLite error. WAL checkpoints run on this thread
only: automatic ones at commit, and a PASSIVE one when the writer is idle.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensorml.buffer.connection import is_disk_full
from sensorml.buffer.db import Buffer
from sensorml.buffer.lanes import EV, LANES, RA, RS, SC, Lanes
from sensorml.buffer.schema import to_json
from sensorml.errors import StoreError

__all__ = ["Writer"]

log = logging.getLogger("sensorml.buffer.recorder")


class Writer:
    """Drains *lanes* into the buffer at *path* (``buffer_kw`` go to :class:`Buffer`)."""

    def __init__(self, lanes: Lanes, path: Path, buffer_kw: dict[str, Any], *,
                 flush_interval_s: float, max_attempts: int, idle_checkpoint_s: float,
                 pressure_s: float, clock: Callable[[], float]) -> None:
        self.lanes, self.path, self.buffer_kw = lanes, path, buffer_kw
        self.flush_interval_s = flush_interval_s
        self.max_attempts = max(1, int(max_attempts))
        self.idle_checkpoint_s, self.pressure_s = idle_checkpoint_s, float(pressure_s)
        self.clock = clock
        self.lock = threading.Lock()  # guards the figures below (read by stats())
        self.store_dropped = dict.fromkeys(LANES, 0)
        self.written = dict.fromkeys(LANES, 0)
        self.errors = 0
        self.last_error: str | None = None
        self.commits = 0
        self.last_commit: float | None = None
        self.commit_ms: deque[float] = deque(maxlen=4096)
        self.checkpoint_ms: deque[float] = deque(maxlen=256)
        self.retry_events: list[tuple] = []
        self.buf_stats: dict[str, Any] = {}
        self._pressure_until = float("-inf")  # monotonic; sampled raw windows dropped before
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- control
    def start(self, timeout: float) -> None:
        """Start the thread and wait until it opened the buffer (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        if not self._opened.wait(timeout):
            raise StoreError(f"{self.path}: buffer did not open within {timeout} s")
        if self._open_error is not None:
            err = self._open_error
            raise err if isinstance(err, StoreError) else StoreError(f"{self.path}: {err}")

    @property
    def started(self) -> bool:
        return self._thread is not None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        try:
            buf = Buffer(self.path, **self.buffer_kw)
        except BaseException as e:  # reported by start()
            self._open_error = e
            self._opened.set()
            return
        self._refresh_stats(buf)
        self._opened.set()
        lanes = self.lanes
        last_write = time.monotonic()
        dirty = False
        stats_at = 0.0
        try:
            while True:
                lanes.wake.wait(self.flush_interval_s)
                lanes.wake.clear()
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
                        buf.space.restore_ballast()  # room kept for the next full filesystem
                if lanes.closed and lanes.empty():
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
            taken, position = self.lanes.take()
            if not any(taken) and not self.retry_events:
                self.lanes.resolved(position)
                return wrote
            try:
                ok = self._commit(buf, taken)
            except Exception as e:  # noqa: BLE001 - a bug or a bad row must not kill the writer
                self._error(buf, e, self.max_attempts)
                with self.lock:
                    for lane in (SC, RA, RS):
                        self.store_dropped[LANES[lane]] += len(taken[lane])
                ok = False
            wrote = True
            self.lanes.resolved(position)
            if not ok:  # the store keeps failing: try again next cycle, don't spin
                return wrote

    def _commit(self, buf: Buffer, taken: list[list]) -> bool:
        events = self.retry_events + [self._event_row(buf, it) for it in taken[EV]]
        self.retry_events = []
        if taken[RS] and time.monotonic() < self._pressure_until:
            with self.lock:  # the filesystem was full moments ago: room for the rest first
                self.store_dropped["raw_sample"] += len(taken[RS])
            taken[RS] = []
        scores = taken[SC]
        raws = [(t, reason, prio, to_json(list(ch)), float(rate), dt, to_json(list(shape)), data)
                for (t, reason, prio, ch, rate, dt, shape, data) in taken[RA] + taken[RS]]
        for attempt in range(1, self.max_attempts + 1):
            t0 = time.perf_counter()
            try:
                buf.write(events, scores, raws)
            except sqlite3.Error as e:
                self._error(buf, e, attempt, keep_events=bool(scores or raws))
                if events and (scores or raws) and is_disk_full(e) and self._write_events(
                        buf, events):
                    events = []  # saved on their own; the rest is tried again
                continue
            ms = (time.perf_counter() - t0) * 1e3
            with self.lock:
                self.commit_ms.append(ms)
                self.commits += 1
                self.last_commit = self.clock()
                self.written["events"] += len(events)
                self.written["scores"] += len(scores)
                self.written["raw_alarm"] += len(taken[RA])
                self.written["raw_sample"] += len(taken[RS])
            return True
        limit = self.lanes.event_lane_size
        with self.lock:  # gave up on this batch: keep its events, drop the rest
            self.retry_events = events[-limit:]
            self.store_dropped["events"] += max(0, len(events) - limit)
            self.store_dropped["scores"] += len(scores)
            self.store_dropped["raw_alarm"] += len(taken[RA])
            self.store_dropped["raw_sample"] += len(taken[RS])
        return False

    def _write_events(self, buf: Buffer, events: list[tuple]) -> bool:
        """Commit events alone (no eviction pass); True if they are in the buffer."""
        try:
            buf.write(events, enforce=False)
        except sqlite3.Error as e:
            self._error(buf, e, self.max_attempts, keep_events=False)
            return False
        with self.lock:
            self.commits += 1
            self.last_commit = self.clock()
            self.written["events"] += len(events)
        return True

    def _final_events(self, buf: Buffer) -> None:
        """At close: events that could not be written get a few more tries, each after
        an eviction; those that still fail are counted as dropped (never silently)."""
        for _ in range(3):
            if not self.retry_events:
                return
            events, self.retry_events = self.retry_events, []
            if self._write_events(buf, events):
                return
            self.retry_events = events
        n = len(self.retry_events)
        if n:
            with self.lock:
                self.store_dropped["events"] += n
            log.error("buffer %s: %d events could not be written before closing (%s); "
                      "counted as dropped", self.path, n, self.last_error)
            self.retry_events = []

    @staticmethod
    def _event_row(buf: Buffer, item: tuple) -> tuple:
        t, kind, priority, detail = item
        try:
            return buf.event_row(kind, detail, t, priority)
        except Exception as e:  # noqa: BLE001 - a bad detail must not lose the event
            return buf.event_row(kind, {"unencodable_detail": repr(e)}, t, priority)

    def _error(self, buf: Buffer, e: Exception, attempt: int, keep_events: bool = True) -> None:
        msg = f"{type(e).__name__}: {e}"
        with self.lock:
            self.errors += 1
            self.last_error = msg
            n = self.errors
        if n <= 3 or n % 100 == 0:  # don't flood the log while the disk stays full
            log.warning("buffer %s write failed (%d errors so far, attempt %d): %s",
                        self.path, n, attempt, msg)
        if is_disk_full(e):
            space = buf.space
            self._pressure_until = time.monotonic() + self.pressure_s
            if space.release_ballast():  # room for the eviction and checkpoint below
                log.warning("buffer %s: filesystem full; released the ballast", self.path)
            try:
                space.checkpoint("TRUNCATE")  # the WAL gives its space back first
            except sqlite3.Error:
                pass
            try:
                # room for scores and raw windows never costs an event; only events do
                space.enforce_cap(force=True, keep_events=keep_events)
                space.checkpoint("TRUNCATE")
            except sqlite3.Error as e2:
                log.warning("buffer %s eviction failed: %s", self.path, e2)
        elif attempt < self.max_attempts:
            threading.Event().wait(0.05 * 2 ** attempt)  # back off (e.g. a busy lock)

    def _guard(self, buf: Buffer) -> None:
        """The filesystem is a cap too: evict by priority when its free space runs low,
        and let sampled raw windows give way for ``pressure_s``."""
        try:
            evicted = buf.space.guard_free_space()
        except sqlite3.Error as e:
            self._error(buf, e, self.max_attempts)
            return
        if evicted:
            self._pressure_until = time.monotonic() + self.pressure_s

    def _checkpoint(self, buf: Buffer) -> None:
        t0 = time.perf_counter()
        try:
            buf.space.checkpoint("PASSIVE")
        except sqlite3.Error as e:
            log.warning("buffer %s checkpoint failed: %s", self.path, e)
            return
        with self.lock:
            self.checkpoint_ms.append((time.perf_counter() - t0) * 1e3)

    def _refresh_stats(self, buf: Buffer) -> None:
        try:
            s = buf.stats()
        except sqlite3.Error:
            return
        with self.lock:
            self.buf_stats = s
