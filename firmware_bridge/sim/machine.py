"""Signal model of a rotating machine (centrifugal pump or induction motor).

The machine produces 3-axis acceleration (``ax``, ``ay`` radial, ``az`` axial, in g) at
``rate`` samples/s, and slow process values (temperature, motor current, pressure,
speed). Vibration is the sum of:

* running-speed harmonics ``A_k·s²·cos(2π·k·φ)`` for k = 1, 2, 3 (``φ`` = shaft phase in
  turns, ``s`` = speed / nominal speed: rotating forces grow with ω²); the two radial axes
  see the rotating force 90° apart (``cos`` on x, ``sin`` on y);
* vane pass for the pump (``n_vanes × fr``), 2× line frequency for the motor;
* bearing defects: resonance ring-downs at BPFO / BPFI / 2·BSF (see
  :mod:`firmware_bridge.sim.faults`), inner race modulated by ``(1+cos 2πφ)/2``, ball by FTF;
* broadband noise: machine noise ∝ ``s`` plus a constant sensor floor.

Faults add to this (imbalance → 1x, misalignment → 2x radial and 1x/2x axial, looseness →
harmonics up to 8x and half-orders, cavitation → bursts of high-frequency noise and a
pressure drop, overheating → temperature) or corrupt the sensor (dropout → zeros and
:attr:`Machine.sensor_silent`, stuck → a frozen value, spikes → ±5..15 g single samples).

Time advances in control ticks of ``rate/control_hz`` samples, aligned to absolute sample
numbers: set-points, fault severities and slow values change at tick starts, the shaft
phase is integrated in closed form within a tick (speed linear over the tick), and each
random stream has its own generator. So the output is phase-continuous and does not
depend on how the samples are asked for: ``generate(300)`` then ``generate(700)`` equals
``generate(1000)``, and the same seed gives identical arrays.

>>> m = Machine("pump", rate=2000.0, seed=1)
>>> x = m.generate(1000); x.shape, x.dtype
((1000, 3), dtype('float32'))
>>> sorted(m.slow_values())
['current_a', 'pressure_bar', 'speed_rpm', 'temperature_c']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.sim.faults import ActiveFaults, FaultEvent, ringdown
from firmware_bridge.sim.process import PROFILES, ProcessModel
from firmware_bridge.sim.schedule import SetPoint, Tracker

TWO_PI = 2.0 * math.pi
CHANNELS = ("ax", "ay", "az")
SLOW_CHANNELS = ("temperature_c", "current_a", "pressure_bar", "speed_rpm")
STATUS_CODES = {"stopped": 0, "running": 1, "starting": 2, "coasting": 3}
#: per-axis gain of bearing impacts (radial sensors see them best)
_IMPACT_GAIN = np.array([1.0, 0.7, 0.3])


@dataclass
class _Tick:
    """What is constant (or linear) over one control tick."""

    f0: float  # shaft Hz at tick start
    f1: float  # shaft Hz at tick end
    phi0: float  # shaft phase (turns, mod 2) at tick start
    coef: np.ndarray  # [n_basis, 3] rotational component amplitudes
    impacts: list = field(default_factory=list)  # (name, ratio, f_def, amp, mod)
    noise: float = 0.0
    cav: float = 0.0
    spikes: float = 0.0
    stuck: bool = False
    silent: bool = False


class Machine:
    """A simulated rotating machine; see the module docstring for the model.

    ``rate`` is 1000–25600 samples/s. ``rpm``/``load`` are the starting set-points
    (default: the profile's nominal speed, 75 % load); ``schedule`` holds later set-point
    changes and ``faults`` scheduled :class:`FaultEvent` s. ``coast_s`` is the time
    constant of the coast-down after :meth:`stop`, ``start_s`` the ramp-up time after
    :meth:`reset`, ``thermal_tau_s`` the temperature's first-order lag.
    """

    channels = CHANNELS
    slow_channels = SLOW_CHANNELS

    def __init__(
        self,
        profile: str = "pump",
        rate: float = 25600.0,
        seed: int = 0,
        *,
        rpm: float | None = None,
        load: float = 0.75,
        schedule: list[SetPoint] | tuple[SetPoint, ...] = (),
        faults: list[FaultEvent] | tuple[FaultEvent, ...] = (),
        resonance_hz: float = 3500.0,
        noise_g: float = 0.003,
        coast_s: float = 2.0,
        start_s: float = 3.0,
        thermal_tau_s: float = 120.0,
        control_hz: float = 100.0,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"profile: {profile!r} is unknown (expected {', '.join(PROFILES)})")
        if not 1000.0 <= rate <= 25600.0:
            raise ConfigError(f"rate: {rate:g} samples/s is not in 1000..25600")
        self.profile = profile
        self.p = PROFILES[profile]
        self.rate = float(rate)
        self.seed = seed
        self.f_res = min(resonance_hz, 0.4 * self.rate)
        self.noise_g = noise_g
        self.coast_s, self.start_s, self.thermal_tau_s = coast_s, start_s, thermal_tau_s
        self._k = max(1, round(self.rate / control_hz))
        self._dt = self._k / self.rate
        self._idx = np.arange(self._k, dtype=np.float64)
        ss = np.random.SeedSequence(seed)
        self._rng_tick, self._rng_noise, self._rng_cav, self._rng_spike = (
            np.random.default_rng(s) for s in ss.spawn(4)
        )
        self._orders = self.p.bearing.orders()
        self._speed = Tracker(rpm if rpm is not None else self.p.rpm)
        self._load = Tracker(load)
        self._setpoints = sorted(schedule, key=lambda s: s.at)
        self.faults = ActiveFaults(faults)
        self._running = True
        self._starting = False
        self._n = 0  # samples generated
        self._i = 0  # position in the current tick
        self._phi = 0.0  # shaft phase (turns, kept mod 2 for the half orders)
        self._line_phi = 0.0
        self._def_phi = dict.fromkeys(("outer_race", "inner_race", "ball"), 0.0)
        self._cage_phi = 0.0
        self._cav_last = np.zeros(3)
        self._held = np.zeros(3)
        self._last = np.zeros(3)
        self._tick: _Tick | None = None
        self._process = ProcessModel(self.p, thermal_tau_s, self._dt)
        self._process.settle(self._speed.value / self.p.rpm, load, self._speed.value)
        self._silent = False

    # ----------------------------------------------------------------- commands
    @property
    def time(self) -> float:
        """Machine time in seconds (samples generated / rate)."""
        return self._n / self.rate

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop` until :meth:`reset` (the machine may still be coasting)."""
        return not self._running

    @property
    def sensor_silent(self) -> bool:
        """True while a ``dropout`` fault keeps the sensor from sending (last tick)."""
        return self._silent

    @property
    def status(self) -> str:
        rpm = self._speed.value
        if not self._running:
            return "coasting" if rpm > 1.0 else "stopped"
        if self._starting and rpm < 0.97 * self._speed.target:
            return "starting"
        self._starting = False
        return "running"

    def stop(self) -> None:
        """De-energise: speed coasts down as ``exp(−t/coast_s)``, vibration with it."""
        self._running = False

    def reset(self) -> None:
        """Restart after a stop: ramp up to the speed set-point over ``start_s``."""
        if not self._running:
            self._running = True
            self._starting = True
            self._speed.set(self._speed.target, slope=self.p.rpm / max(self.start_s, 1e-3))

    def inject(self, fault: str, severity: float = 1.0, ramp_s: float = 0.0) -> None:
        """Start (or change) a fault now; it reaches ``severity`` after ``ramp_s`` s."""
        self.faults.inject(fault, severity, ramp_s, self.time)

    def clear_faults(self, fault: str | None = None) -> None:
        """Heal one fault, or all of them (and drop the pending fault schedule)."""
        self.faults.clear(fault)

    def active_faults(self) -> dict[str, float]:
        """Severity of each active fault now (ground truth, e.g. for labels)."""
        return self.faults.levels(self.time)

    def defect_frequencies(self) -> dict[str, float]:
        """Shaft rate ``fr`` and bearing defect frequencies in Hz at the current speed."""
        fr = self._speed.value / 60.0
        return {"fr": fr, **self.p.bearing.frequencies(fr)}

    def slow_values(self) -> dict[str, float]:
        """Latest slow values as a sensor would report them (with measurement noise)."""
        return dict(self._process.measured)

    # --------------------------------------------------------------- generation
    def generate(self, n: int) -> np.ndarray:
        """Next ``n`` vibration samples, float32 ``[n, 3]`` (ax, ay, az) in g."""
        out = np.empty((n, 3), dtype=np.float32)
        pos = 0
        while pos < n:
            if self._i == 0:
                self._begin_tick()
            m = min(n - pos, self._k - self._i)
            out[pos : pos + m] = self._segment(self._i, m)
            pos += m
            self._i += m
            self._n += m
            if self._i == self._k:
                self._i = 0
                self._end_tick()
        return out

    def _begin_tick(self) -> None:
        t = self.time
        while self._setpoints and self._setpoints[0].at <= t:
            sp = self._setpoints.pop(0)
            if sp.rpm is not None:
                self._speed.set(sp.rpm, sp.ramp_s)
            if sp.load is not None:
                self._load.set(sp.load, sp.ramp_s)
        self.faults.advance(t)
        sev = self.faults.levels(t + 0.5 * self._dt)
        rpm0 = self._speed.value
        if self._running:
            rpm1 = self._speed.step(self._dt)
        else:
            rpm1 = rpm0 * math.exp(-self._dt / self.coast_s)
            self._speed.value = rpm1 if rpm1 > 0.5 else 0.0
        self._load.step(self._dt)
        u = self._rng_tick.standard_normal(6).tolist()
        r = self._rng_tick.random(2).tolist()
        s = 0.5 * (rpm0 + rpm1) / self.p.rpm
        tk = _Tick(rpm0 / 60.0, rpm1 / 60.0, self._phi, self._coefficients(s, sev))
        s2 = s * s
        fr = 0.5 * (tk.f0 + tk.f1)
        slip = 0.99 * (1.0 + 0.002 * u[0])
        bearing = (("outer_race", "bpfo", 1.0), ("inner_race", "bpfi", 1.0), ("ball", "bsf", 2.0))
        for name, key, mult in bearing:
            if sev.get(name, 0.0) > 0.0:
                ratio = mult * self._orders[key] * slip
                tk.impacts.append((name, ratio, ratio * fr, 0.8 * sev[name] * s2))
        tk.noise = self.noise_g + 0.02 * s
        cav = sev.get("cavitation", 0.0)
        tk.cav = cav * 0.15 * s * math.exp(0.6 * u[1]) if self.p.n_vanes else 0.0
        tk.spikes = sev.get("spikes", 0.0)
        if sev.get("stuck", 0.0) > 0.0:
            if not (self._tick and self._tick.stuck):
                self._held = self._last.copy()
            tk.stuck = True
        tk.silent = r[0] < sev.get("dropout", 0.0)
        self._silent = tk.silent
        self._tick = tk
        self._process.step(s, self._load.value, self._running, self._speed.value, sev, u[2:])

    def _coefficients(self, s: float, sev: dict[str, float]) -> np.ndarray:
        """Amplitudes (g) of the rotational basis for axes x, y, z.

        Basis rows: cos/sin of k·φ for k = 1..8, then cos/sin of (k+½)·φ for k = 0..2,
        then cos/sin of the line-frequency phase. On x a term is ``A·cos``, on y ``A·sin``
        (a rotating force seen 90° apart), on z a smaller in-phase share.
        """
        c = np.zeros((2 * 8 + 6 + 2, 3))
        s2 = s * s
        imb, mis = sev.get("imbalance", 0.0), sev.get("misalignment", 0.0)
        loose = sev.get("looseness", 0.0)
        harm = {1: 0.05 + 0.25 * imb, 2: 0.02 + 0.12 * mis, 3: 0.01 + 0.03 * mis}
        for k in range(1, 9):
            a = (harm.get(k, 0.0) + 0.08 * loose / math.sqrt(k)) * s2
            axial = 0.3 * harm.get(k, 0.0) * s2 + (0.2 * mis * s2 if k <= 2 else 0.0)
            c[2 * (k - 1), 0] = a
            c[2 * (k - 1) + 1, 1] = 0.9 * a * (1.0 + 0.5 * loose)  # looseness: mostly vertical
            c[2 * (k - 1), 2] = axial
        if self.p.n_vanes:
            v = self.p.n_vanes - 1
            a = 0.04 * s2 * (0.7 + 0.4 * self._load.value)
            c[2 * v, 0] += a * 0.6
            c[2 * v + 1, 1] += a
            c[2 * v, 2] += a * 0.2
        for h in range(3):  # half orders 0.5x, 1.5x, 2.5x
            a = 0.05 * loose * s2
            c[16 + 2 * h, 0] = a
            c[16 + 2 * h + 1, 1] = a
        if self.p.line_hz and self._running:
            c[22, 0] = c[23, 1] = 0.01 * (0.5 + self._load.value)
        return c

    def _segment(self, i0: int, m: int) -> np.ndarray:
        tk = self._tick
        assert tk is not None
        i = self._idx[i0 : i0 + m]
        df = tk.f1 - tk.f0
        dphi = (tk.f0 * i + df * (i * i) * (0.5 / self._k)) * (1.0 / self.rate)
        a = TWO_PI * (tk.phi0 + dphi)
        c1, s1 = np.cos(a), np.sin(a)
        basis = np.empty((m, tk.coef.shape[0]))
        basis[:, 0], basis[:, 1] = c1, s1
        ck, sk = c1, s1
        for k in range(1, 8):  # cos/sin((k+1)a) by the angle-addition recurrence
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            basis[:, 2 * k], basis[:, 2 * k + 1] = ck, sk
        if tk.coef[16:22].any():
            ch, sh = np.cos(0.5 * a), np.sin(0.5 * a)
            basis[:, 16], basis[:, 17] = ch, sh
            for h in range(1, 3):  # (h+½)a = h·a + ½a
                cka, ska = basis[:, 2 * (h - 1)], basis[:, 2 * (h - 1) + 1]
                basis[:, 16 + 2 * h] = cka * ch - ska * sh
                basis[:, 17 + 2 * h] = ska * ch + cka * sh
        else:
            basis[:, 16:22] = 0.0
        if tk.coef[22:24].any():
            la = TWO_PI * (self._line_phi + 2.0 * self.p.line_hz * (i / self.rate))
            basis[:, 22], basis[:, 23] = np.cos(la), np.sin(la)
        else:
            basis[:, 22:24] = 0.0
        x = basis @ tk.coef
        x += self._rng_noise.standard_normal((m, 3)) * tk.noise
        for name, ratio, f_def, amp in tk.impacts:
            ph = self._def_phi[name] + ratio * dphi
            # damping: at least 5 %, more when the resonance is low (low sample rates)
            # so each ring-down has died out (4 time constants) before the next impact
            zeta = max(0.05, 4.0 * f_def / (TWO_PI * self.f_res))
            ring = ringdown(ph, f_def, self.f_res, zeta) * amp
            if name == "inner_race":
                ring *= 0.2 + 0.8 * (0.5 + 0.5 * c1)
            elif name == "ball":
                cage = self._cage_phi + self._orders["ftf"] * dphi
                ring *= 0.6 + 0.4 * np.cos(TWO_PI * cage)
            x += ring[:, None] * _IMPACT_GAIN
        if tk.cav:
            e = self._rng_cav.standard_normal((m, 3))
            hf = np.diff(e, axis=0, prepend=self._cav_last[None, :])
            self._cav_last = e[-1].copy()
            x += hf * tk.cav
        if tk.spikes:
            p = min(1.0, tk.spikes * 20.0 / self.rate)
            uu = self._rng_spike.random((m, 3))
            hit = uu < p
            if hit.any():
                w = 2.0 * uu[hit] / p - 1.0
                x[hit] += np.sign(w) * (5.0 + 10.0 * np.abs(w))
        if tk.stuck:
            x[:] = self._held
        if tk.silent:
            x[:] = 0.0
        self._last = x[-1].copy()
        return x

    def _end_tick(self) -> None:
        tk = self._tick
        assert tk is not None
        dphi = 0.5 * (tk.f0 + tk.f1) * self._dt
        self._phi = (tk.phi0 + dphi) % 2.0
        for name, ratio, _, _ in tk.impacts:
            self._def_phi[name] = (self._def_phi[name] + ratio * dphi) % 1.0
        self._cage_phi = (self._cage_phi + self._orders["ftf"] * dphi) % 1.0
        self._line_phi = (self._line_phi + 2.0 * self.p.line_hz * self._dt) % 1.0
