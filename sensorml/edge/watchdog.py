"""The watchdog (silence, sequence gaps, model failures) and the latched trip.

Both take time from outside: :class:`Watchdog` reads an injected ``clock`` (default
``time.monotonic``), :class:`TripLatch` is given ``t`` by its caller. Neither sleeps.

>>> now = [0.0]
>>> wd = Watchdog(0.5, clock=lambda: now[0])
>>> wd.feed(); now[0] = 0.4; wd.check() is None
True
>>> now[0] = 0.61; ev = wd.check(); (ev.cause, ev.action)
('silence', 'trip')
>>> wd.check() is None  # once per silence; armed again by the next feed
True
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sensorml.errors import ConfigError

__all__ = ["Watchdog", "WatchdogEvent", "TripLatch", "TripRecord"]

_ACTIONS = ("trip", "alarm")


def _action(v: str, key: str) -> str:
    if v not in _ACTIONS:
        raise ConfigError(f"watchdog.{key}: {v!r} is not one of {', '.join(_ACTIONS)}")
    return v


@dataclass(frozen=True)
class WatchdogEvent:
    """Something the watchdog wants acted on. ``cause``: ``silence``, ``gap`` or ``model``;
    ``action``: ``trip`` or ``alarm`` (configured per cause)."""

    cause: str
    action: str
    t: float
    detail: dict[str, Any]

    @property
    def message(self) -> str:
        d = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"watchdog {self.cause} → {self.action} ({d})"


class Watchdog:
    """Fail-safe supervision of the fast path.

    * **Silence**: ``feed()`` on every block; ``check()`` returns a ``silence`` event once
      when more than ``timeout_s`` passed since the last feed (strictly more), and not
      again until a feed re-arms it. The silence clock starts at the first ``feed()`` or
      ``check()`` (whichever comes first): a source that never delivers still fires
      ``timeout_s`` after supervision started.
    * **Gaps**: ``note_gap(n_missing)`` counts missing blocks; a gap of more than
      ``max_gap`` blocks returns a ``gap`` event. With ``gap_window_s`` the missing blocks
      are summed over that sliding window instead (many small gaps add up).
    * **Model failures**: ``note_model_failure(exc)`` counts consecutive failures and
      returns a ``model`` event when the streak reaches ``model_failures`` (once per
      streak); ``note_model_ok()`` ends the streak.

    ``feed`` is two attribute stores, safe to call from another thread than ``check``.
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic, *,
                 max_gap: int = 8, model_failures: int = 3, on_silence: str = "trip",
                 on_gap: str = "alarm", on_model_failure: str = "alarm",
                 gap_window_s: float | None = None) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) \
                or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ConfigError(f"watchdog.timeout: {timeout_s!r} is not a duration > 0 s")
        for key, v in (("max_gap", max_gap), ("model_failures", model_failures)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"watchdog.{key}: {v!r} is not an integer >= 1")
        if gap_window_s is not None and not (isinstance(gap_window_s, int | float)
                                             and gap_window_s > 0):
            raise ConfigError(f"watchdog.gap_window: {gap_window_s!r} is not a duration > 0 s")
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.max_gap = max_gap
        self.model_failures = model_failures
        self.actions = {"silence": _action(on_silence, "on_silence"),
                        "gap": _action(on_gap, "on_gap"),
                        "model": _action(on_model_failure, "on_model_failure")}
        self.gap_window_s = gap_window_s
        self._gaps: collections.deque[tuple[float, int]] = collections.deque()
        self._gap_sum = 0
        self._last: float | None = None
        self._fired = False
        # counters (read by metrics/status)
        self.feeds = 0
        self.silences = 0
        self.gaps = 0
        self.missing = 0
        self.gap_events = 0
        self.model_failure_count = 0
        self.consecutive_model_failures = 0
        self.model_events = 0
        self.last_model_error: str | None = None

    # ------------------------------------------------------------ silence
    def feed(self, t: float | None = None) -> None:
        """A block arrived (at ``t`` on the watchdog's clock; now by default)."""
        self._last = self.clock() if t is None else t
        self._fired = False
        self.feeds += 1

    def silent_for(self) -> float:
        """Seconds since the last feed (0 before supervision started)."""
        last = self._last
        return 0.0 if last is None else self.clock() - last

    def check(self) -> WatchdogEvent | None:
        """A ``silence`` event the first time more than ``timeout_s`` passed since the last
        feed (once per silence); None otherwise."""
        if self._last is None:
            self._last = self.clock()
            return None
        now = self.clock()
        silent = now - self._last
        if silent <= self.timeout_s or self._fired:
            return None
        self._fired = True
        self.silences += 1
        return WatchdogEvent("silence", self.actions["silence"], now,
                             {"silent_s": round(silent, 6), "timeout_s": self.timeout_s})

    # --------------------------------------------------------------- gaps
    def note_gap(self, n_missing: int, t: float | None = None) -> WatchdogEvent | None:
        """Count a sequence gap of ``n_missing`` blocks; an event if it exceeds ``max_gap``."""
        n = int(n_missing)
        if n <= 0:
            return None
        self.gaps += 1
        self.missing += n
        now = self.clock() if t is None else t
        total = n
        if self.gap_window_s is not None:
            q = self._gaps
            q.append((now, n))
            self._gap_sum += n
            while q and q[0][0] <= now - self.gap_window_s:
                self._gap_sum -= q.popleft()[1]
            total = self._gap_sum
        if total <= self.max_gap:
            return None
        self.gap_events += 1
        if self.gap_window_s is not None:  # one event per window's worth of gaps
            self._gaps.clear()
            self._gap_sum = 0
        return WatchdogEvent("gap", self.actions["gap"], now,
                             {"missing": total, "max_gap": self.max_gap})

    # -------------------------------------------------------------- model
    def note_model_failure(self, exc: BaseException | str | None = None,
                           t: float | None = None) -> WatchdogEvent | None:
        """Count a failed scoring; an event when ``model_failures`` fail in a row."""
        self.model_failure_count += 1
        self.consecutive_model_failures += 1
        self.last_model_error = None if exc is None else (
            exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")[:500]
        if self.consecutive_model_failures != self.model_failures:
            return None
        self.model_events += 1
        return WatchdogEvent("model", self.actions["model"],
                             self.clock() if t is None else t,
                             {"failures": self.consecutive_model_failures,
                              "error": self.last_model_error})

    def note_model_ok(self) -> None:
        """A window was scored: ends a failure streak."""
        self.consecutive_model_failures = 0

    def stats(self) -> dict[str, Any]:
        return {"feeds": self.feeds, "silences": self.silences, "gaps": self.gaps,
                "missing": self.missing, "gap_events": self.gap_events,
                "model_failures": self.model_failure_count,
                "consecutive_model_failures": self.consecutive_model_failures,
                "model_events": self.model_events, "silent_s": round(self.silent_for(), 6)}


@dataclass
class TripRecord:
    """One trip episode: the first cause and the later causes while latched."""

    reason: dict | str
    tripped_at: float
    causes: list[tuple[float, dict | str]] = field(default_factory=list)
    extra_causes: int = 0  # causes beyond ``TripLatch.max_causes`` (counted, not kept)


class TripLatch:
    """A latched trip: the first cause wins and it stays tripped until :meth:`reset`.

    Thread-safe: the fast path trips, the operator's reset comes from another thread.
    Causes arriving while tripped are appended to ``causes`` (the first ``max_causes``
    are kept, the rest counted in ``extra_causes``) so a model repeating TRIP every
    window cannot grow memory. Who reset it and when is the caller's to record (the
    gateway writes a ``reset`` event with the peer's identity).

    >>> latch = TripLatch()
    >>> latch.trip({"cause": "limit"}, 1.0), latch.trip("model", 2.0), latch.reason
    (True, False, {'cause': 'limit'})
    >>> latch.reset(), latch.tripped, latch.reset()
    (True, False, False)
    """

    def __init__(self, *, max_causes: int = 100) -> None:
        self.max_causes = max_causes
        self._cond = threading.Condition(threading.Lock())
        self._current: TripRecord | None = None
        self.trips = 0
        self.resets = 0

    def trip(self, reason: dict | str, t: float) -> bool:
        """Latch with ``reason`` at ``t``. True only if this call latched it."""
        if isinstance(reason, dict):
            reason = dict(reason)
        with self._cond:
            cur = self._current
            if cur is not None:
                if len(cur.causes) < self.max_causes:
                    cur.causes.append((t, reason))
                else:
                    cur.extra_causes += 1
                return False
            self._current = TripRecord(reason, t, [(t, reason)])
            self.trips += 1
            self._cond.notify_all()
            return True

    def reset(self) -> bool:
        """Clear the latch. False if it was not tripped."""
        with self._cond:
            if self._current is None:
                return False
            self._current = None
            self.resets += 1
            self._cond.notify_all()
            return True

    def wait(self, tripped: bool = True, timeout: float | None = None) -> bool:
        """Block until the latch is (or is not) tripped; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: (self._current is not None) == tripped, timeout)

    @property
    def tripped(self) -> bool:
        return self._current is not None

    @property
    def reason(self) -> dict | str | None:
        """The first cause of the current trip (None when not tripped)."""
        cur = self._current
        return None if cur is None else cur.reason

    @property
    def tripped_at(self) -> float | None:
        cur = self._current
        return None if cur is None else cur.tripped_at

    @property
    def causes(self) -> list[tuple[float, dict | str]]:
        """``(t, reason)`` of every cause of the current trip, the first one first."""
        with self._cond:
            cur = self._current
            return [] if cur is None else list(cur.causes)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``sensorml status``."""
        with self._cond:
            cur = self._current
            if cur is None:
                return {"tripped": False, "trips": self.trips, "resets": self.resets}
            return {"tripped": True, "reason": cur.reason, "tripped_at": cur.tripped_at,
                    "causes": len(cur.causes) + cur.extra_causes, "trips": self.trips,
                    "resets": self.resets}
