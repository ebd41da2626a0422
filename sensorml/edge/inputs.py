"""Dead inputs that look alive: non-finite and frozen fast channels, stale slow points.

A sensor can fail without going silent (the watchdog's case): an ADC that sends NaN, a
channel that repeats the exact same value (a stuck driver, a cable shorted to a rail),
a Modbus device whose measuring task hung while its comms task replays the last reply.
:class:`InputGuard` watches for three conditions, per channel:

- ``non-finite``: a fast block holds NaN or ±inf in the channel (hard limits already
  trip on a NaN in a *limited* channel; this covers every fast channel);
- ``frozen``: a fast channel repeated the exact same value for ``frozen_after_s`` of
  samples (no real vibration sensor does that for half a second);
- ``stale``: a slow point with a ``stale_after`` did not change for that long (a NaN,
  a failed read, is not a change).

A condition that holds continuously for ``persist_s`` (``watchdog.sensor_fault_for``)
is acted on once per episode with ``action`` (``watchdog.on_sensor_fault``: ``trip``,
the default a safety engineer would choose, or ``alarm``). Onset, action and clearing
are each an :class:`InputEvent` for the fast path to record and count. A non-finite or
frozen condition clears on the first block without it; a stale one on the next change.

The guard does no I/O; per fast block it costs one max and one min per channel.

>>> import numpy as np
>>> from firmware_bridge.block import Block
>>> t = [0.0]
>>> g = InputGuard(("ax",), frozen_after_s=0.5, persist_s=1.0, action="trip", monotonic=lambda: t[0])
>>> nan = Block(0.0, 100.0, np.full((10, 1), np.nan, np.float32), ("ax",))
>>> [(e.phase, e.fault) for e in g.fast_block(nan)]
[('onset', 'non-finite')]
>>> t[0] = 1.5; [(e.phase, e.fault, e.action) for e in g.check()]
[('act', 'non-finite', 'trip')]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge.block import Block

__all__ = ["InputEvent", "InputGuard"]

FAULTS = ("non-finite", "frozen", "stale")


@dataclass(frozen=True, slots=True)
class InputEvent:
    """``phase``: ``onset``, ``act`` (persisted: trip or alarm) or ``cleared``."""

    phase: str
    channel: str
    fault: str
    since: float  # monotonic time the condition began
    action: str = ""
    detail: tuple = ()

    def as_dict(self, now: float) -> dict:
        return {"channel": self.channel, "fault": self.fault, "phase": self.phase,
                "for_s": round(max(0.0, now - self.since), 3), **dict(self.detail)}


class InputGuard:
    """See the module docstring. Call from the fast path's thread only."""

    def __init__(self, fast_channels: Sequence[str], *, frozen_after_s: float,
                 persist_s: float, action: str, stale_after: Mapping[str, float] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.fast_channels = tuple(fast_channels)
        self.frozen_after_s = frozen_after_s
        self.persist_s = persist_s
        self.action = action
        self.monotonic = monotonic
        n = len(self.fast_channels)
        self._last = np.full(n, np.nan)
        self._run = np.zeros(n)  # seconds of samples repeating the same value
        #: slow channel -> [stale_after_s, last value, monotonic time of the last change]
        now = monotonic()
        self._slow = {ch: [float(s), math.nan, now] for ch, s in (stale_after or {}).items()}
        #: (channel, fault) -> [since, acted, detail]
        self.active: dict[tuple[str, str], list] = {}
        self.onsets = dict.fromkeys(FAULTS, 0)

    # ------------------------------------------------------------------ inputs
    def fast_block(self, block: Block) -> list[InputEvent]:
        x = block.samples
        if x.shape[0] == 0 or block.channels != self.fast_channels:
            return []
        cols = np.ascontiguousarray(x.T) if x.shape[0] >= 32 else x.T
        mx, mn = cols.max(axis=1), cols.min(axis=1)
        finite = np.isfinite(mx) & np.isfinite(mn)
        out: list[InputEvent] = []
        if self.frozen_after_s > 0:
            same = finite & (mx == mn)
            cont = same & (mx == self._last)
            self._run = np.where(cont, self._run + x.shape[0] / block.rate,
                                 np.where(same, x.shape[0] / block.rate, 0.0))
            self._last = np.where(same, mx, np.nan)
            frozen = self._run >= self.frozen_after_s
        else:
            frozen = None
        now = self.monotonic()
        for i, ch in enumerate(self.fast_channels):
            self._set(out, ch, "non-finite", not finite[i], now, ())
            if frozen is not None:
                self._set(out, ch, "frozen", bool(frozen[i]), now,
                          (("value", float(mx[i])),) if frozen[i] else ())
        return out

    def slow_block(self, block: Block) -> list[InputEvent]:
        if not self._slow:
            return []
        out: list[InputEvent] = []
        now = self.monotonic()
        row = block.samples[-1]
        for i, ch in enumerate(block.channels):
            st = self._slow.get(ch)
            if st is None:
                continue
            v = float(row[i])
            if math.isfinite(v) and v != st[1]:
                st[1], st[2] = v, now
                self._set(out, ch, "stale", False, now, ())
        return out

    def check(self) -> list[InputEvent]:
        """Stale points past their time, and conditions that persisted long enough."""
        now = self.monotonic()
        out: list[InputEvent] = []
        for ch, (after, value, changed) in self._slow.items():
            if now - changed > after and (ch, "stale") not in self.active:
                detail = (("value", value), ("stale_after_s", after))
                self.active[(ch, "stale")] = [changed + after, False, detail]
                self.onsets["stale"] += 1
                out.append(InputEvent("onset", ch, "stale", changed + after, detail=detail))
        for (ch, fault), st in self.active.items():
            if not st[1] and now - st[0] >= self.persist_s:
                st[1] = True
                out.append(InputEvent("act", ch, fault, st[0], self.action, st[2]))
        return out

    # ----------------------------------------------------------------- helpers
    def _set(self, out: list, ch: str, fault: str, on: bool, now: float, detail: tuple) -> None:
        key = (ch, fault)
        st = self.active.get(key)
        if on and st is None:
            self.active[key] = [now, False, detail]
            self.onsets[fault] += 1
            out.append(InputEvent("onset", ch, fault, now, detail=detail))
        elif not on and st is not None:
            del self.active[key]
            out.append(InputEvent("cleared", ch, fault, st[0]))
