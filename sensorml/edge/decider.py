"""Turning anomaly scores into verdicts: thresholds, k-of-n debounce and hysteresis.

The scorer gives one score per window (higher = more anomalous). :class:`Decider`
maps each score to a *raw level* (the highest threshold it reaches) and then debounces:

* **Entering** level ``L`` (WARN, ALARM, TRIP): at least ``k`` of the last ``n`` raw
  levels are ``>= L``. A single spike with ``k=3`` therefore never trips; ``k=1`` trips
  on the first window over the trip threshold.
* **Leaving** level ``L``: fewer than ``k`` of the last ``n`` raw levels are ``>= L``
  *and* the score is below ``threshold_L - margin``. While the score stays in the band
  ``[threshold_L - margin, threshold_L)`` the level is held, so a score wandering
  around a threshold does not chatter.
* The **margin** is absolute, the same for all three levels, so it works for negative
  scores (IsolationForest-style) as well as positive ones::

      margin = hysteresis * (trip - warn)      if trip > warn
             = hysteresis * abs(trip)          if trip == warn != 0
             = hysteresis                      if trip == warn == 0

  ``Decider(..., margin=0.05)`` sets it directly instead.

In one formula, with ``D`` the highest level whose k-of-n count is met and ``V`` the
previous verdict: ``V' = max(D, max{L <= V : score >= threshold_L - margin})``.
Escalation therefore passes through WARN and ALARM on a ramp, and de-escalation can
step down several levels at once when the score falls far.

A non-finite score (NaN, ±inf) is a *model fault*: the debounce state is left as it
was, the decision is flagged ``model_fault=True`` and its verdict is
``max(current verdict, fault_verdict)`` (``fault_verdict`` defaults to ALARM). Counting
consecutive faults and deciding whether they trip is the :class:`Watchdog`'s job.

>>> d = Decider(Thresholds(warn=0.5, alarm=0.6, trip=0.7), k=2, n=3)
>>> [d.update(s).verdict.label for s in (0.1, 0.8, 0.1, 0.8, 0.8)]
['normal', 'normal', 'normal', 'trip', 'trip']
>>> d.update(0.8).reason
'score 0.8 ≥ trip 0.7 in 3 of last 3 windows'

Hard limits live in :mod:`sensorml.edge.limits`, the watchdog and the trip latch in
:mod:`sensorml.edge.watchdog`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from sensorml.errors import ConfigError

__all__ = ["Verdict", "Thresholds", "Decision", "Decider"]


class Verdict(IntEnum):
    """Severity of a decision; ordered, so ``verdict >= Verdict.ALARM`` works."""

    NORMAL = 0
    WARN = 1
    ALARM = 2
    TRIP = 3

    @property
    def label(self) -> str:
        """Lower-case name used in events and metrics: ``Verdict.TRIP.label == 'trip'``."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str | int | Verdict, key: str = "verdict") -> Verdict:
        """``'alarm'``/``'ALARM'``/``2`` → ``Verdict.ALARM``; ConfigError naming ``key`` otherwise."""
        if isinstance(text, int) and not isinstance(text, bool):
            try:
                return cls(int(text))
            except ValueError:
                pass
        elif isinstance(text, str) and text.upper() in cls.__members__:
            return cls[text.upper()]
        names = ", ".join(v.label for v in cls)
        raise ConfigError(f"{key}: {text!r} is not a verdict (one of {names})")


_LABELS = ("normal", "warn", "alarm", "trip")
_V = tuple(Verdict)


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds per severity; ``warn <= alarm <= trip``, all finite.

    >>> Thresholds(0.3, 0.2, 0.9)
    Traceback (most recent call last):
    ...
    sensorml.errors.ConfigError: thresholds.alarm: 0.2 is below thresholds.warn (0.3)
    """

    warn: float
    alarm: float
    trip: float

    def __post_init__(self) -> None:
        self.validate("thresholds")

    def validate(self, key: str = "thresholds") -> None:
        """Raise ConfigError naming ``key.<field>`` if a value is not finite or out of order."""
        prev: tuple[str, float, object] | None = None
        for name in ("warn", "alarm", "trip"):
            given = getattr(self, name)
            if isinstance(given, bool) or not isinstance(given, numbers.Real):
                raise ConfigError(f"{key}.{name}: {given!r} is not a number")
            v = float(given)  # numpy scalars from training code become plain floats
            if not math.isfinite(v):
                raise ConfigError(f"{key}.{name}: {v} is not a finite number")
            object.__setattr__(self, name, v)
            if prev is not None and v < prev[1]:
                raise ConfigError(f"{key}.{name}: {given} is below {key}.{prev[0]} ({prev[2]})")
            prev = (name, v, given)

    @classmethod
    def from_dict(cls, d: dict, key: str = "thresholds") -> Thresholds:
        """From ``{"warn": .., "alarm": .., "trip": ..}`` (e.g. a manifest); errors name ``key``."""
        missing = [n for n in ("warn", "alarm", "trip") if n not in d]
        if missing:
            raise ConfigError(f"{key}: missing {', '.join(missing)}")
        try:
            return cls(d["warn"], d["alarm"], d["trip"])
        except ConfigError as e:
            raise ConfigError(str(e).replace("thresholds", key, 2)) from None

    def level(self, score: float) -> int:
        """Raw level of one score (0..3); a score equal to a threshold reaches it."""
        if score >= self.trip:
            return 3
        if score >= self.alarm:
            return 2
        if score >= self.warn:
            return 1
        return 0

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(-inf, warn, alarm, trip)``: indexable by level."""
        return (-math.inf, self.warn, self.alarm, self.trip)


class Decision(NamedTuple):
    """The outcome of one :meth:`Decider.update`. ``reason`` is built on demand."""

    verdict: Verdict
    raw_level: Verdict
    score: float
    count: int  # windows of the last ``n`` whose raw level reaches ``verdict`` (or ``raw_level``)
    n: int
    k: int
    model_fault: bool
    thresholds: Thresholds
    margin: float

    @property
    def reason(self) -> str:
        """One line for events and operators, e.g. ``score 0.71 ≥ trip 0.65 in 3 of last 5 windows``."""
        s = f"{self.score:.4g}"
        if self.model_fault:
            return f"model fault: score {s}; fail-safe verdict {self.verdict.label}"
        th = self.thresholds.as_tuple()
        v = int(self.verdict)
        if v == 0:
            if self.raw_level:
                lv = int(self.raw_level)
                return (f"score {s} ≥ {_LABELS[lv]} {th[lv]:.4g} in {self.count} of last "
                        f"{self.n} windows (needs {self.k})")
            return f"score {s} < warn {th[1]:.4g}"
        if self.count >= self.k:
            if self.score >= th[v]:
                return (f"score {s} ≥ {_LABELS[v]} {th[v]:.4g} in {self.count} of last "
                        f"{self.n} windows")
            return (f"{self.count} of last {self.n} windows ≥ {_LABELS[v]} {th[v]:.4g} "
                    f"(score now {s})")
        return (f"score {s} holds {_LABELS[v]} (leaves below {th[v] - self.margin:.4g}); "
                f"{self.count} of last {self.n} windows ≥ {th[v]:.4g}")


class Decider:
    """k-of-n debounced, hysteretic verdicts from scores (see the module docstring).

    ``update`` is O(1): a fixed ring of the last ``n`` raw levels and, per level, a count
    of ring entries at or above it, updated as levels enter and leave the ring.
    """

    __slots__ = ("thresholds", "k", "n", "hysteresis", "margin", "fault_verdict",
                 "_th", "_low", "_ring", "_pos", "_counts", "_state", "faults", "updates")

    def __init__(self, thresholds: Thresholds, k: int = 3, n: int = 5, hysteresis: float = 0.1,
                 *, margin: float | None = None,
                 fault_verdict: Verdict | str = Verdict.ALARM) -> None:
        if not isinstance(thresholds, Thresholds):
            raise ConfigError(f"decision.thresholds: expected Thresholds, got {thresholds!r}")
        for key, v in (("k", k), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"decision.{key}: {v!r} is not an integer >= 1")
        if k > n:
            raise ConfigError(f"decision.k: {k} is larger than decision.n ({n})")
        if not isinstance(hysteresis, int | float) or not 0.0 <= hysteresis <= 1.0:
            raise ConfigError(f"decision.hysteresis: {hysteresis!r} is not in 0..1")
        if margin is None:
            t = thresholds
            span = t.trip - t.warn
            margin = hysteresis * (span if span > 0 else (abs(t.trip) or 1.0))
        elif not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"decision.margin: {margin!r} is not a finite number >= 0")
        self.thresholds = thresholds
        self.k = k
        self.n = n
        self.hysteresis = float(hysteresis)
        self.margin = float(margin)
        self.fault_verdict = Verdict.parse(fault_verdict, "decision.fault_verdict")
        self._th = thresholds.as_tuple()
        # score at or above _low[L] holds level L once entered
        self._low = (-math.inf,) + tuple(x - self.margin for x in self._th[1:])
        self.faults = 0
        self.updates = 0
        self.reset()

    def reset(self) -> None:
        """Forget the history: back to NORMAL with an empty (all-normal) ring."""
        self._ring = [0] * self.n
        self._pos = 0
        self._counts = [self.n, 0, 0, 0]  # _counts[L] = ring entries with level >= L
        self._state = 0

    @property
    def verdict(self) -> Verdict:
        """The current (debounced) verdict."""
        return Verdict(self._state)

    def update(self, score: float) -> Decision:
        """Add one window's score and return the decision for it."""
        self.updates += 1
        if not (score == score and score - score == 0.0):  # NaN or ±inf
            self.faults += 1
            v = _V[max(self._state, self.fault_verdict)]
            return Decision(v, Verdict.NORMAL, score, 0, self.n, self.k, True,
                            self.thresholds, self.margin)
        th = self._th
        raw = 3 if score >= th[3] else 2 if score >= th[2] else 1 if score >= th[1] else 0
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        if raw != old:
            counts = self._counts
            if raw > old:
                for lv in range(old + 1, raw + 1):
                    counts[lv] += 1
            else:
                for lv in range(raw + 1, old + 1):
                    counts[lv] -= 1
            ring[pos] = raw
        pos += 1
        self._pos = 0 if pos == self.n else pos
        counts = self._counts
        k = self.k
        deb = 3 if counts[3] >= k else 2 if counts[2] >= k else 1 if counts[1] >= k else 0
        state = self._state
        if deb < state:
            low = self._low
            held = state
            while held > deb and score < low[held]:
                held -= 1
            state = held
        else:
            state = deb
        self._state = state
        shown = state or raw
        return Decision(_V[state], _V[raw], score, counts[shown], self.n, k, False,
                        self.thresholds, self.margin)

    def __repr__(self) -> str:
        t = self.thresholds
        return (f"Decider(warn={t.warn}, alarm={t.alarm}, trip={t.trip}, k={self.k}, "
                f"n={self.n}, margin={self.margin:.4g}, verdict={self.verdict.label})")
