"""The recorder: a non-blocking front for the buffer, with its own writer thread.

The fast path calls :meth:`Recorder.record_score` / :meth:`~Recorder.record_raw` /
:meth:`~Recorder.record_event`; each appends a tuple to a lane of the
:class:`~sensorml.buffer.lanes.Lanes` under a lock held for a few hundred nanoseconds,
and never blocks, raises or does I/O. The :class:`~sensorml.buffer.writer.Writer`
thread opens the :class:`~sensorml.buffer.db.Buffer` itself and commits batches, one
transaction each, every ``flush_interval_s`` or as soon as ``batch`` rows are waiting.
What is dropped where (a full queue, a full disk) is said in those two modules; every
drop is counted, per lane, in :meth:`Recorder.stats` and the metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sensorml.buffer.lanes import LANES, RA, RS, SC, Lanes
from sensorml.buffer.schema import RAW_PRIORITY, TABLES
from sensorml.buffer.writer import Writer
from sensorml.errors import StoreError
from sensorml.gateway.metrics import Registry

__all__ = ["Recorder", "LANES"]

_URGENT = frozenset(("trip", "reset", "alarm", "limit", "watchdog"))


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Recorder:
    """Bounded, non-blocking recording into a :class:`~sensorml.buffer.db.Buffer` at
    ``buffer_path``.

    ``start=False`` keeps the writer thread parked until :meth:`start` (the queue still
    fills, drops are counted); ``raw_sample_every=N`` keeps one in N ``sample`` raw
    windows (raw windows around alarms are all kept). ``max_bytes`` and
    ``buffer_options`` go to the :class:`~sensorml.buffer.db.Buffer`.
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
        self.raw_sample_every = int(raw_sample_every)
        self.clock = clock
        self.lanes = Lanes(int(queue_size), int(batch), int(event_lane_size))
        self._put = self.lanes.put  # bound once: the fast path's only call into the lanes
        self.writer = Writer(self.lanes, self.path,
                             {"max_bytes": max_bytes, "clock": clock, "device": device,
                              **(buffer_options or {})},
                             flush_interval_s=float(flush_interval_s), max_attempts=max_attempts,
                             idle_checkpoint_s=idle_checkpoint_s, pressure_s=pressure_s,
                             clock=clock)
        self._sample_calls = 0
        if start:
            self.start()

    # ------------------------------------------------------------ producers
    def record_event(self, kind: str, detail: dict | None = None, t: float | None = None,
                     priority: int = 0) -> None:
        """Queue an event (never pushed out by scores or raw windows)."""
        self.lanes.put_event((self.clock() if t is None else t, kind, priority, detail))
        if kind in _URGENT:
            self.lanes.wake.set()  # rare; persist promptly (a restart restores the latch from them)

    def record_score(self, t: float, window_seq: int, score: float, verdict: int,
                     model_version: str | None, features: np.ndarray | None = None) -> None:
        """Queue one window's score; ``features`` is copied as little-endian float32."""
        # Coerce here (~0.1 µs): a numpy scalar would make the whole SQLite batch fail.
        blob = None if features is None else np.asarray(features, dtype="<f4").tobytes()
        mv = None if model_version is None else str(model_version)
        self._put(SC, (float(t), int(window_seq), float(score), int(verdict), mv, blob))

    def record_raw(self, t: float, reason: str, channels: Sequence[str], rate: float,
                   data: np.ndarray) -> None:
        """Queue a raw window (``reason``: ``around_alarm`` | ``sample``); data is copied."""
        lane = RA if reason == "around_alarm" else RS
        if lane == RS:  # one producer thread (the fast path) calls this: no lock needed
            self._sample_calls += 1
            if (self._sample_calls - 1) % self.raw_sample_every:
                return
        a = np.ascontiguousarray(data)
        reason = "around_alarm" if lane == RA else "sample"  # anything else counts as sample
        self._put(lane, (float(t), reason, RAW_PRIORITY[reason], channels, float(rate),
                         a.dtype.str, a.shape, a.tobytes()))

    # ------------------------------------------------------------- control
    def start(self, timeout: float = 30.0) -> None:
        """Start the writer thread and wait until it opened the buffer (idempotent).

        Raises :class:`StoreError` if the buffer cannot be opened.
        """
        self.writer.start(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued before this call is committed (or dropped).

        Returns False on timeout or if the writer is not running.
        """
        return self.lanes.wait_resolved(timeout, self.writer.alive)

    def close(self, timeout: float = 10.0) -> None:
        """Flush, stop the writer and close the buffer (idempotent)."""
        if not self.writer.started and not self.lanes.closed:
            try:
                self.start()
            except StoreError:
                pass
        self.flush(timeout)
        self.lanes.close()
        self.writer.join(timeout)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Queue depth, rows written/dropped per lane, commit latency, errors, buffer."""
        queued = self.lanes.queued()
        with self.lanes.lock:
            dropped = dict(self.lanes.dropped)
        w = self.writer
        with w.lock:
            out = {"queued": queued, "queued_total": sum(queued.values()),
                   "written": dict(w.written), "dropped": dropped,
                   "store_dropped": dict(w.store_dropped), "errors": w.errors,
                   "last_error": w.last_error, "commits": w.commits,
                   "last_commit": w.last_commit, "pending_retry_events": len(w.retry_events),
                   "buffer": dict(w.buf_stats)}
            commit_ms, ckpt_ms = list(w.commit_ms), list(w.checkpoint_ms)
        out["commit_ms"] = {"p50": _percentile(commit_ms, 0.5),
                            "p99": _percentile(commit_ms, 0.99),
                            "max": max(commit_ms, default=None),
                            "over_5ms": sum(ms > 5.0 for ms in commit_ms), "n": len(commit_ms)}
        out["checkpoint_ms"] = {"n": len(ckpt_ms), "max": max(ckpt_ms, default=None)}
        out["alive"] = w.alive()
        return out

    def register_metrics(self, registry: Registry, prefix: str = "sensorml_recorder") -> None:
        """Expose queue depth, rows written/dropped per lane, errors and buffer evictions
        in a :class:`~sensorml.gateway.metrics.Registry` (read at each render, no fast-path cost)."""
        w, lanes = self.writer, self.lanes
        q = registry.gauge(f"{prefix}_queued", "Rows waiting for the writer.", ("lane",))
        wr = registry.counter(f"{prefix}_written_total", "Rows committed to the buffer.", ("lane",))
        d = registry.counter(f"{prefix}_dropped_total",
                             "Rows dropped because the queue was full.", ("lane",))
        for i, lane in enumerate(LANES):
            q.labels(lane=lane).set_function(lambda q=lanes.q[i]: len(q))
            wr.labels(lane=lane).set_function(lambda lane=lane: w.written[lane])
            d.labels(lane=lane).set_function(lambda lane=lane: lanes.dropped[lane])
        sd = registry.counter(f"{prefix}_store_dropped_total",
                              "Rows the buffer could not take (disk full, given up after "
                              "retries, or sampled raw windows giving way).", ("lane",))
        for lane in LANES:
            sd.labels(lane=lane).set_function(lambda lane=lane: w.store_dropped[lane])
        registry.counter(f"{prefix}_errors_total", "Buffer write errors (retried).") \
            .set_function(lambda: w.errors)
        ev = registry.counter(f"{prefix}_evicted_total", "Rows evicted by the size cap.",
                              ("table",))
        for table in TABLES:
            ev.labels(table=table).set_function(
                lambda t=table: w.buf_stats.get("evicted", {}).get(t, 0))
        registry.gauge(f"{prefix}_buffer_bytes", "Live bytes in the buffer file.") \
            .set_function(lambda: w.buf_stats.get("used_bytes", math.nan))
        registry.gauge(f"{prefix}_last_commit_timestamp_seconds", "Time of the last commit.") \
            .set_function(lambda: w.last_commit or math.nan)
