"""Fault models of the simulated machine: bearing geometry, fault catalogue and schedule.

Bearing defect frequencies (rolling-element bearing with ``n`` balls of diameter ``Bd``
on a pitch diameter ``Pd``, contact angle ``θ``, inner ring turning at shaft rate ``fr``,
outer ring fixed)::

    FTF  = fr/2 · (1 − Bd/Pd·cosθ)                 cage (fundamental train) frequency
    BPFO = n·fr/2 · (1 − Bd/Pd·cosθ)  = n · FTF    ball pass, outer race
    BPFI = n·fr/2 · (1 + Bd/Pd·cosθ)               ball pass, inner race
    BSF  = Pd·fr/(2·Bd) · (1 − (Bd/Pd·cosθ)²)      ball spin

A spall on a race is struck once per ball pass; every strike rings the structure's
resonance (a few kHz) and dies away. That is why a bearing fault shows in the *envelope*
spectrum at BPFO/BPFI/2·BSF (a ball defect strikes both races once per spin) rather than
in the plain spectrum. An inner-race defect turns with the shaft through the load zone,
so its strikes are amplitude-modulated at ``fr``; a ball defect is carried by the cage,
so its strikes are modulated at FTF.

Fault catalogue (severity 1.0 = a clearly developed fault; amplitudes scale with it)::

    outer_race    ring-downs at BPFO, 0.8 g peak, constant amplitude (defect in the load zone)
    inner_race    ring-downs at BPFI, modulated by the shaft rate (sidebands BPFI ± fr)
    ball          ring-downs at 2·BSF, modulated by the cage (FTF)
    imbalance     +0.25 g at 1x, radial, x and y 90° apart (a rotating force)
    misalignment  +0.12 g at 2x (and 3x) radial, strong 1x and 2x axial (z)
    looseness     harmonics up to 8x and half orders 0.5x/1.5x/2.5x, mostly vertical (y)
    cavitation    bursts of broadband high-frequency noise; pressure −20 % and unsteady (pump)
    overheating   temperature target +45 °C (lubrication/cooling failure), first-order lag
    dropout       the sensor sends nothing: zeros from Machine.generate and ``sensor_silent``;
                  the serial device and ``sim://`` send no data. Severity s < 1 drops each
                  10 ms control tick with probability s (an intermittent connector).
    stuck         the sensor repeats its last value on every axis
    spikes        single-sample spikes of ±5..15 g, ~20/s per axis at severity 1

Bearing faults also warm the bearing (+4 °C per unit severity). Sensor faults touch only the
vibration, never the slow values.

>>> g = BearingGeometry()          # a 6205 deep-groove ball bearing
>>> {k: round(v, 3) for k, v in g.orders().items()}
{'ftf': 0.398, 'bpfo': 3.585, 'bpfi': 5.415, 'bsf': 2.357}
>>> round(g.frequencies(49.5)["bpfo"], 1)
177.4
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import ConfigError

#: faults of the machine itself (they change the physics)
MECHANICAL_FAULTS = (
    "outer_race",
    "inner_race",
    "ball",
    "imbalance",
    "misalignment",
    "looseness",
    "cavitation",
    "overheating",
)
#: faults of the vibration sensor (the machine is fine, the measurement is not)
SENSOR_FAULTS = ("dropout", "stuck", "spikes")
FAULTS = MECHANICAL_FAULTS + SENSOR_FAULTS

#: bit of each fault in the ``fault_code`` Modbus register (ground truth for demos)
FAULT_BITS = {name: 1 << i for i, name in enumerate(FAULTS)}


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Geometry of a rolling-element bearing (defaults: SKF 6205, used on the pump)."""

    n_balls: int = 9
    ball_d_mm: float = 7.94
    pitch_d_mm: float = 39.04
    contact_deg: float = 0.0

    def orders(self) -> dict[str, float]:
        """Defect frequencies as multiples of the shaft rate (see the module docstring)."""
        r = self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_deg))
        return {
            "ftf": 0.5 * (1.0 - r),
            "bpfo": 0.5 * self.n_balls * (1.0 - r),
            "bpfi": 0.5 * self.n_balls * (1.0 + r),
            "bsf": self.pitch_d_mm / (2.0 * self.ball_d_mm) * (1.0 - r * r),
        }

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Defect frequencies in Hz at shaft rate ``shaft_hz``."""
        return {k: v * shaft_hz for k, v in self.orders().items()}


def check_fault(name: str, key: str = "fault") -> str:
    """Return ``name`` if it is a known fault, else raise a ConfigError listing them.

    >>> check_fault("outer_race")
    'outer_race'
    >>> check_fault("rust")
    Traceback (most recent call last):
    ...
    firmware_bridge.errors.ConfigError: fault: 'rust' is not a known fault (expected one of outer_race, inner_race, ball, imbalance, misalignment, looseness, cavitation, overheating, dropout, stuck, spikes)
    """
    if name not in FAULTS:
        raise ConfigError(
            f"{key}: {name!r} is not a known fault (expected one of {', '.join(FAULTS)})"
        )
    return name


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault that starts at machine time ``at`` (s) and grows to ``severity`` over
    ``ramp_s`` seconds (0 = at once). Severity 1.0 is a clearly developed fault."""

    fault: str
    at: float = 0.0
    severity: float = 1.0
    ramp_s: float = 0.0

    def __post_init__(self) -> None:
        check_fault(self.fault)
        if not (self.severity >= 0.0 and math.isfinite(self.severity)):
            raise ConfigError(f"fault {self.fault}: severity {self.severity!r} must be >= 0")
        if self.ramp_s < 0 or self.at < 0:
            raise ConfigError(f"fault {self.fault}: at and ramp must be >= 0 seconds")


class ActiveFaults:
    """Faults acting on the machine, each with its severity ramp.

    Scheduled events fire when machine time passes their ``at``; :meth:`inject` starts
    one now. A fault's severity grows linearly from where it was to its target:

    >>> f = ActiveFaults([FaultEvent("imbalance", at=10.0, severity=1.0, ramp_s=4.0)])
    >>> f.advance(9.0); f.severity("imbalance", 9.0)
    0.0
    >>> f.advance(12.0); f.severity("imbalance", 12.0)
    0.5
    >>> f.clear(); f.severity("imbalance", 20.0)
    0.0
    """

    def __init__(self, schedule: list[FaultEvent] | tuple[FaultEvent, ...] = ()) -> None:
        self._pending = sorted(schedule, key=lambda e: e.at)
        # name -> (from severity, to severity, start time, ramp seconds)
        self._ramps: dict[str, tuple[float, float, float, float]] = {}

    def advance(self, t: float) -> None:
        """Start every scheduled event whose time has come (each at its own ``at``)."""
        while self._pending and self._pending[0].at <= t:
            ev = self._pending.pop(0)
            self._start(ev.fault, ev.severity, ev.ramp_s, ev.at)

    def inject(self, fault: str, severity: float, ramp_s: float, t: float) -> None:
        check_fault(fault)
        FaultEvent(fault, 0.0, severity, ramp_s)  # validates
        self._start(fault, severity, ramp_s, t)

    def _start(self, fault: str, severity: float, ramp_s: float, t: float) -> None:
        now = self.severity(fault, t)
        self._ramps[fault] = (now, float(severity), t, float(ramp_s))

    def clear(self, fault: str | None = None) -> None:
        """Remove one fault (or all, including the pending schedule when ``None``)."""
        if fault is None:
            self._ramps.clear()
            self._pending.clear()
        else:
            self._ramps.pop(check_fault(fault), None)

    def severity(self, fault: str, t: float) -> float:
        r = self._ramps.get(fault)
        if r is None:
            return 0.0
        a, b, t0, ramp = r
        if ramp <= 0 or t >= t0 + ramp:
            return b
        return a + (b - a) * max(0.0, t - t0) / ramp

    def levels(self, t: float) -> dict[str, float]:
        """Severity of every fault with a non-zero level at time ``t``."""
        out = {name: self.severity(name, t) for name in self._ramps}
        return {k: v for k, v in out.items() if v > 0.0}

    def code(self, t: float) -> int:
        """Bitmask of active faults (:data:`FAULT_BITS`)."""
        c = 0
        for name in self.levels(t):
            c |= FAULT_BITS[name]
        return c


def ringdown(phase: np.ndarray, f_defect: float, f_res: float, zeta: float) -> np.ndarray:
    """Train of resonance ring-downs, one per defect cycle.

    ``phase`` is the defect phase in cycles (an impact at each integer); the time since
    the last impact is ``τ = frac(phase)/f_defect`` and the structure answers each impact
    with ``exp(−2π·ζ·f_res·τ)·sin(2π·f_res·τ)``. Because the phase is carried between
    calls, the train is continuous across blocks.

    >>> x = ringdown(np.array([0.0, 0.25, 1.0]), 100.0, 1000.0, 0.05)
    >>> float(x[0]), float(x[2])
    (0.0, 0.0)
    """
    if f_defect <= 0:
        return np.zeros_like(phase)
    tau = (phase - np.floor(phase)) * (1.0 / f_defect)
    w = 2.0 * math.pi * f_res
    return np.exp(tau * (-zeta * w)) * np.sin(tau * w)


def parse_fault_arg(text: str) -> tuple[str, float]:
    """Parse ``"outer_race"`` or ``"outer_race 0.5"`` / ``"outer_race=0.5"`` → (name, severity).

    >>> parse_fault_arg("inner_race=0.5")
    ('inner_race', 0.5)
    """
    parts = text.replace("=", " ").split()
    if not parts:
        raise ConfigError("fault: empty fault name")
    name = check_fault(parts[0])
    sev = 1.0
    if len(parts) > 1:
        try:
            sev = float(parts[1])
        except ValueError:
            raise ConfigError(f"fault {name}: severity {parts[1]!r} is not a number") from None
    return name, sev


def parse_fault_schedule(text: str, key: str = "faults") -> list[FaultEvent]:
    """Parse ``"name[@at][+ramp][*severity], ..."`` into fault events.

    >>> parse_fault_schedule("imbalance@30s+10s*0.5, outer_race@1m")
    [FaultEvent(fault='imbalance', at=30.0, severity=0.5, ramp_s=10.0), FaultEvent(fault='outer_race', at=60.0, severity=1.0, ramp_s=0.0)]
    """
    from firmware_bridge.parsing import parse_duration

    out = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        rest, _, sev = item.partition("*")
        rest, _, ramp = rest.partition("+")
        name, _, at = rest.partition("@")
        try:
            severity = float(sev) if sev else 1.0
        except ValueError:
            raise ConfigError(f"{key}[{i}]: severity {sev!r} is not a number") from None
        out.append(
            FaultEvent(
                check_fault(name.strip(), f"{key}[{i}]"),
                at=parse_duration(at, f"{key}[{i}].at") if at else 0.0,
                severity=severity,
                ramp_s=parse_duration(ramp, f"{key}[{i}].ramp") if ramp else 0.0,
            )
        )
    return out
