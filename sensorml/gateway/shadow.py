"""Shadow evaluation: a candidate model scores the same windows as the live one, off the
fast path, and goes live only if it behaves.

The fast path calls :meth:`ShadowRunner.offer` with the window's features and the live
verdict *after* the live decision (and trip): a ``put_nowait`` on a bounded queue that
never blocks and never raises; when the queue is full the window is skipped for the
shadow (counted in ``skipped``), never delayed. A thread scores what it gets with the
candidate's own scorer and decider. After ``windows`` scored windows it decides:

- any error (the model raised or gave a non-finite score) → rolled back;
- candidate alarm rate > ``max(rate_factor × live alarm rate, max_alarm_rate)`` over the
  same windows → rolled back;
- otherwise → promoted.

The outcome goes to ``on_done(ShadowResult)`` (from the shadow thread).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sensorml.edge.decider import Decider, Verdict

log = logging.getLogger("sensorml.gateway.shadow")

__all__ = ["ShadowRunner", "ShadowResult"]


@dataclass(frozen=True)
class ShadowResult:
    name: str
    version: str
    promote: bool
    reason: str
    windows: int
    errors: int
    candidate_alarm_rate: float
    live_alarm_rate: float
    bound: float
    skipped: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


class ShadowRunner:
    """Scores a candidate beside the live model; see the module docstring."""

    def __init__(self, scorer, decider: Decider, *, name: str, version: str,
                 windows: int = 600, max_alarm_rate: float = 0.01, rate_factor: float = 2.0,
                 on_done: Callable[[ShadowResult], None] | None = None,
                 queue_size: int = 256) -> None:
        self.scorer = scorer
        self.decider = decider
        self.name, self.version = name, version
        self.windows = windows
        self.max_alarm_rate = max_alarm_rate
        self.rate_factor = rate_factor
        self.on_done = on_done
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.scored = 0
        self.errors = 0
        self.first_error: str | None = None
        self.cand_alarms = 0
        self.live_alarms = 0
        self.skipped = 0
        self.result: ShadowResult | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"shadow-{version}", daemon=True)

    def start(self) -> ShadowRunner:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def offer(self, x, live_verdict: int) -> None:
        """Hand one window to the shadow: O(1), never blocks, never raises."""
        if self.done.is_set():
            return
        try:
            self.q.put_nowait((x, live_verdict))
        except queue.Full:
            self.skipped += 1
        except Exception:  # noqa: BLE001 - the fast path must never see a shadow problem
            pass

    def stop(self) -> None:
        """Abandon the run (no decision); used when the candidate is replaced."""
        self._stop.set()
        self.done.set()
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass

    def progress(self) -> dict:
        return {"name": self.name, "version": self.version, "scored": self.scored,
                "windows": self.windows, "errors": self.errors, "skipped": self.skipped,
                "candidate_alarms": self.cand_alarms, "live_alarms": self.live_alarms,
                "result": self.result.to_dict() if self.result else None}

    def _run(self) -> None:
        get = self.q.get
        while not self._stop.is_set() and self.scored < self.windows:
            item = get()
            if item is None:
                continue
            x, live = item
            self.scored += 1
            if int(live) >= Verdict.ALARM:
                self.live_alarms += 1
            try:
                score = float(self.scorer.score(x))
                if not math.isfinite(score):
                    raise ValueError(f"model returned {score}")
                if self.decider.update(score).verdict >= Verdict.ALARM:
                    self.cand_alarms += 1
            except Exception as e:  # noqa: BLE001 - every failure counts against the candidate
                self.errors += 1
                if self.first_error is None:
                    self.first_error = f"{type(e).__name__}: {e}"[:300]
        if self._stop.is_set():
            return
        self.result = self._decide()
        self.done.set()
        log.info("shadow %s %s: %s (%s)", self.name, self.version,
                 "promote" if self.result.promote else "roll back", self.result.reason)
        if self.on_done is not None:
            try:
                self.on_done(self.result)
            except Exception:  # noqa: BLE001
                log.exception("shadow on_done failed")

    def _decide(self) -> ShadowResult:
        n = max(self.scored, 1)
        cand, live = self.cand_alarms / n, self.live_alarms / n
        bound = max(self.rate_factor * live, self.max_alarm_rate)
        if self.errors:
            promote = False
            reason = f"{self.errors} of {self.scored} windows failed in shadow: {self.first_error}"
        elif cand > bound:
            promote = False
            reason = (f"alarm rate {cand:.1%} over {self.scored} windows exceeds the bound "
                      f"{bound:.1%} (live model {live:.1%}; bound = max({self.rate_factor:g} x live, "
                      f"{self.max_alarm_rate:.1%}))")
        else:
            promote = True
            reason = (f"{self.scored} windows without errors; alarm rate {cand:.1%} within "
                      f"{bound:.1%} (live {live:.1%})")
        return ShadowResult(self.name, self.version, promote, reason, self.scored, self.errors,
                            cand, live, bound, self.skipped, round(time.monotonic() - self._t0, 3))
