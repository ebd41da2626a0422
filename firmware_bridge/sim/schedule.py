"""Operating schedule of the simulated machine: speed and load set-points with ramps.

Text form (CLI ``--speed-schedule`` / ``--load-schedule``): comma-separated
``time:value[/ramp]`` items, e.g. ``"0:2970, 60s:2400/10s, 2m:2970/5"`` — at 60 s move to
2400 rpm over 10 s, at 2 min back to 2970 rpm over 5 s. ``auto`` makes a random (seeded)
schedule of plausible changes every 20–60 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import parse_duration


@dataclass(frozen=True, slots=True)
class SetPoint:
    """At machine time ``at`` (s), move speed (rpm) and/or load (0..1.2, fraction of
    rated) to new values, linearly over ``ramp_s`` seconds."""

    at: float
    rpm: float | None = None
    load: float | None = None
    ramp_s: float = 0.0


def parse_schedule(text: str, kind: str = "rpm", key: str = "--speed-schedule") -> list[SetPoint]:
    """Parse ``"0:2970,60s:2400/10s"`` into set-points of ``kind`` (``rpm`` or ``load``).

    >>> parse_schedule("0:2970, 1m:2400/10s")
    [SetPoint(at=0.0, rpm=2970.0, load=None, ramp_s=0.0), SetPoint(at=60.0, rpm=2400.0, load=None, ramp_s=10.0)]
    >>> parse_schedule("5:0.5", kind="load")[0].load
    0.5
    """
    out: list[SetPoint] = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        if ":" not in item:
            raise ConfigError(f"{key}[{i}]: {item!r} is not time:value[/ramp] (e.g. 60s:2400/10s)")
        at_text, rest = item.split(":", 1)
        value_text, _, ramp_text = rest.partition("/")
        at = parse_duration(at_text, f"{key}[{i}].time")
        ramp = parse_duration(ramp_text, f"{key}[{i}].ramp") if ramp_text else 0.0
        try:
            value = float(value_text)
        except ValueError:
            raise ConfigError(f"{key}[{i}].value: {value_text!r} is not a number") from None
        lo, hi = (0.0, 20000.0) if kind == "rpm" else (0.0, 1.5)
        if not lo <= value <= hi or not math.isfinite(value):
            raise ConfigError(f"{key}[{i}].value: {value} is not in {lo}..{hi}")
        if kind == "rpm":
            out.append(SetPoint(at, rpm=value, ramp_s=ramp))
        else:
            out.append(SetPoint(at, load=value, ramp_s=ramp))
    return sorted(out, key=lambda s: s.at)


def auto_schedule(seed: int, nominal_rpm: float, duration_s: float = 3600.0) -> list[SetPoint]:
    """A seeded schedule of plausible set-point changes: every 20–60 s the speed moves
    within ±10 % of nominal and the load within 0.4–1.0, each over a 3–15 s ramp.

    >>> a = auto_schedule(1, 2970.0, 300.0); a == auto_schedule(1, 2970.0, 300.0)
    True
    """
    rng = np.random.default_rng([seed, 0x5C4ED])
    out: list[SetPoint] = []
    t = float(rng.uniform(20, 60))
    while t < duration_s:
        rpm = float(nominal_rpm * rng.uniform(0.9, 1.1)) if rng.random() < 0.5 else None
        load = float(rng.uniform(0.4, 1.0))
        out.append(SetPoint(t, rpm=rpm, load=load, ramp_s=float(rng.uniform(3, 15))))
        t += float(rng.uniform(20, 60))
    return out


class Tracker:
    """A set-point follower: moves ``value`` toward ``target`` at ``slope`` units/s.

    >>> tr = Tracker(0.0); tr.set(10.0, ramp_s=2.0); tr.step(1.0)
    5.0
    >>> tr.step(5.0)
    10.0
    """

    def __init__(self, value: float) -> None:
        self.value = float(value)
        self.target = float(value)
        self.slope = math.inf

    def set(self, target: float, ramp_s: float = 0.0, slope: float | None = None) -> None:
        self.target = float(target)
        if slope is not None:
            self.slope = slope
        elif ramp_s <= 0:
            self.slope = math.inf
        else:
            self.slope = abs(self.target - self.value) / ramp_s

    def step(self, dt: float) -> float:
        d = self.target - self.value
        lim = self.slope * dt
        self.value = self.target if abs(d) <= lim else self.value + math.copysign(lim, d)
        return self.value
