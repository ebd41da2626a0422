"""The simulated device's side of the gateway's life signs, and two ways to misbehave.

:class:`HeartbeatMonitor` is what a PLC or a drive does with the gateway's heartbeat
(``--heartbeat-timeout S``): beats arrive as ``HB <n>`` lines on the serial line
(``firmware_bridge/PROTOCOL.md`` §4) or as changes of the heartbeat coil / register on
Modbus (:data:`firmware_bridge.sim.modbus_device.HEARTBEAT_COIL`,
:data:`~firmware_bridge.sim.modbus_device.HEARTBEAT_REGISTER`). The timeout is enforced
from the first beat on (a gateway that never sent one is not supervised), and while it
has run out the machine is held stopped, exactly as a STOP would stop it, until beats
come back *and* someone resets it.

:class:`Spell` is a switch that is on for a while: the simulator's ``freeze`` command
(the Modbus registers keep replaying the same values, a device whose firmware hung with
its comms task alive) and ``nan`` command (every fast sample is NaN, a dead ADC).

>>> t = [0.0]
>>> hb = HeartbeatMonitor(1.0, clock=lambda: t[0])
>>> hb.state, hb.lost()
('none', False)
>>> hb.beat("serial")
'first heartbeat by serial'
>>> t[0] = 1.5
>>> hb.state, hb.lost()
('lost', True)
>>> hb.beat("serial")
'heartbeat back by serial after 1.50 s'
>>> s = Spell(clock=lambda: t[0]); s.set(2.0); s.active(), s.describe()
(True, 'on for 2.00 s more')
>>> t[0] = 4.0; s.active()
False
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import parse_duration

__all__ = ["HeartbeatMonitor", "Spell", "spell_command"]


class HeartbeatMonitor:
    """Beats in, ``lost()`` out: no beat for ``timeout_s`` after the first one."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"--heartbeat-timeout: {timeout_s!r} must be more than 0 s")
        self.timeout_s = timeout_s
        self.clock = clock
        self.beats = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def beat(self, via: str) -> str | None:
        """One heartbeat arrived; returns a line to log for the first one and for a return."""
        now = self.clock()
        with self._lock:
            first, gap = self._last is None, (0.0 if self._last is None else now - self._last)
            lost = not first and gap > self.timeout_s
            self._last = now
            self.beats += 1
        if first:
            return f"first heartbeat by {via}"
        if lost:
            return f"heartbeat back by {via} after {gap:.2f} s"
        return None

    def lost(self) -> bool:
        """True while no beat came for more than the timeout (after the first beat)."""
        with self._lock:
            last = self._last
        return last is not None and self.clock() - last > self.timeout_s

    def silent_for(self) -> float:
        """Seconds since the last beat (0 before the first)."""
        with self._lock:
            last = self._last
        return 0.0 if last is None else self.clock() - last

    @property
    def state(self) -> str:
        """``none`` (no beat yet), ``ok`` or ``lost``."""
        if self._last is None:
            return "none"
        return "lost" if self.lost() else "ok"


class Spell:
    """On until a deadline (or until switched off); ``seconds=None`` means until :meth:`off`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until = -math.inf

    def set(self, seconds: float | None) -> None:
        self._until = math.inf if seconds is None else self.clock() + seconds

    def off(self) -> None:
        self._until = -math.inf

    def active(self) -> bool:
        return self.clock() < self._until

    def describe(self) -> str:
        if not self.active():
            return "off"
        if self._until == math.inf:
            return "on until switched off"
        return f"on for {self._until - self.clock():.2f} s more"


def spell_command(spell: Spell, verb: str, args: list[str]) -> str:
    """``freeze`` / ``nan`` with ``[DURATION | off]``: apply it; the reply's text."""
    if not args:
        spell.set(None)
    elif args[0].lower() == "off":
        spell.off()
    else:
        seconds = parse_duration(args[0], verb)
        if seconds <= 0:
            raise ConfigError(f"{verb}: {args[0]!r} must be more than 0 s (or 'off')")
        spell.set(seconds)
    return f"{verb} {spell.describe()}"
