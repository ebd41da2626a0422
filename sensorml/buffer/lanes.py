"""The recorder's queue: four lanes by priority, bounded, never blocking a producer.

Lanes, by priority: events (0), scores (1), raw windows around alarms (2), sampled raw
windows (3). Scores and raw windows share ``queue_size`` slots; when they are all taken,
a new item pushes out the oldest queued item of a *lower* priority lane, or is itself
dropped if there is none; either way the drop is counted per lane. Events have their own
lane (``event_lane_size``, a memory safety valve that is never reached in practice) and
are never pushed out by other rows. A producer holds the lock for a few hundred
nanoseconds and never waits on the consumer.

The consumer (the writer thread) :meth:`Lanes.take` s batches and reports them
:meth:`Lanes.resolved` once committed or given up; :meth:`Lanes.wait_resolved` waits
for everything queued before it (the recorder's ``flush``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["EV", "LANES", "Lanes", "RA", "RS", "SC"]

LANES = ("events", "scores", "raw_alarm", "raw_sample")
EV, SC, RA, RS = 0, 1, 2, 3


class Lanes:
    def __init__(self, queue_size: int, batch: int, event_lane_size: int) -> None:
        self.queue_size, self.batch, self.event_lane_size = queue_size, batch, event_lane_size
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.wake = threading.Event()  # set when a batch is ready or a flush waits
        self.q: tuple[deque, ...] = (deque(), deque(), deque(), deque())
        self.dropped = dict.fromkeys(LANES, 0)
        self.closed = False
        self._n = 0  # queued scores + raw windows (bounded by queue_size)
        self._enq = [0, 0, 0, 0]  # appended per lane
        self._popped = [0, 0, 0, 0]  # removed per lane (taken or pushed out)
        self._resolved = [0, 0, 0, 0]  # everything below this index per lane is resolved

    # ------------------------------------------------------------ producers
    def put_event(self, item: tuple) -> None:
        """Queue an event (never pushed out by scores or raw windows)."""
        with self.lock:
            if self.closed or len(self.q[EV]) >= self.event_lane_size:
                self.dropped["events"] += 1
                return
            self.q[EV].append(item)
            self._enq[EV] += 1

    def put(self, lane: int, item: tuple) -> None:
        """Queue a score or raw window, pushing out a lower-priority one when full."""
        with self.lock:
            if self.closed:
                self.dropped[LANES[lane]] += 1
                return
            if self._n >= self.queue_size:
                for victim in (RS, RA, SC):  # lowest priority first
                    if victim > lane and self.q[victim]:
                        self.q[victim].popleft()
                        self._popped[victim] += 1
                        self.dropped[LANES[victim]] += 1
                        self._n -= 1
                        break
                else:
                    self.dropped[LANES[lane]] += 1
                    return
            self.q[lane].append(item)
            self._enq[lane] += 1
            self._n += 1
            full = self._n == self.batch
        if full:
            self.wake.set()

    # ------------------------------------------------------------- consumer
    def take(self) -> tuple[list[list], list[int]]:
        """Up to ``batch`` items, higher priority lanes first, and the position to
        report :meth:`resolved` once they are committed or given up."""
        with self.lock:
            taken: list[list] = [[], [], [], []]
            room = self.batch
            for lane in (EV, SC, RA, RS):
                q = self.q[lane]
                k = min(room, len(q))
                if k:
                    taken[lane] = [q.popleft() for _ in range(k)]
                    self._popped[lane] += k
                    room -= k
            self._n -= len(taken[SC]) + len(taken[RA]) + len(taken[RS])
            return taken, list(self._popped)

    def resolved(self, position: list[int]) -> None:
        with self.cond:
            self._resolved = position
            self.cond.notify_all()

    def wait_resolved(self, timeout: float, alive: Callable[[], bool]) -> bool:
        """Wait until everything queued before this call is resolved; False on timeout
        or as soon as ``alive()`` says the consumer is gone."""
        deadline = time.monotonic() + timeout
        with self.cond:
            target = list(self._enq)
            self.wake.set()
            while any(c < t for c, t in zip(self._resolved, target)):
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Refuse (and count) what comes after; wake the consumer to finish."""
        with self.lock:
            self.closed = True
        self.wake.set()

    def queued(self) -> dict[str, int]:
        with self.lock:
            return {name: len(q) for name, q in zip(LANES, self.q)}

    def empty(self) -> bool:
        return not any(self.q)
