"""Slow process values of the simulated machine: temperature, motor current, pressure, speed.

Each follows its operating point through a first-order lag, ``y += (target − y)·(1 − e^(−dt/τ))``
(τ: temperature ``thermal_tau_s``, current 0.3 s, pressure 0.5 s). Targets, with
``s`` = speed / nominal and ``L`` = load (fraction of rated)::

    current  = s·(I_idle + (I_full − I_idle)·L)             0 when stopped (de-energised)
    pressure = P_nom·s²·(1.05 − 0.1·L)·(1 − 0.2·cavitation)  pump affinity law: p ∝ n²
    temp     = ambient + rise·L·s + 45·overheating + 4·(bearing fault severities)·s

Measured values add small sensor noise (cavitation makes the pressure fluctuate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from firmware_bridge.sim.faults import BearingGeometry


@dataclass(frozen=True, slots=True)
class Profile:
    """Nameplate of a simulated machine."""

    rpm: float
    n_vanes: int
    bearing: BearingGeometry
    pressure_bar: float
    current_full_a: float
    current_idle_a: float
    line_hz: float
    ambient_c: float = 25.0
    temp_rise_c: float = 35.0


PROFILES = {
    "pump": Profile(2970.0, 5, BearingGeometry(), 4.0, 15.0, 5.0, 0.0),
    "motor": Profile(1480.0, 0, BearingGeometry(9, 9.525, 46.0), 0.0, 30.0, 10.0, 50.0),
}


class ProcessModel:
    """First-order lags of the slow values toward their operating point (module docstring)."""

    def __init__(self, profile: Profile, thermal_tau_s: float, dt: float) -> None:
        self.p = profile
        self.dt = dt
        self.taus = {"temperature_c": thermal_tau_s, "current_a": 0.3, "pressure_bar": 0.5}
        self.state: dict[str, float] = {}
        self.measured: dict[str, float] = {}

    def targets(self, s: float, load: float, running: bool, rpm: float, sev: dict[str, float]) -> dict[str, float]:
        p = self.p
        on = 1.0 if running else 0.0
        current = on * min(1.0, s) * (p.current_idle_a + (p.current_full_a - p.current_idle_a) * load)
        cav = sev.get("cavitation", 0.0)
        pressure = p.pressure_bar * s * s * (1.05 - 0.1 * load) * (1.0 - 0.2 * min(cav, 1.0))
        bearing = sum(sev.get(f, 0.0) for f in ("outer_race", "inner_race", "ball"))
        temp = (
            p.ambient_c
            + p.temp_rise_c * load * min(1.0, s)
            + 45.0 * sev.get("overheating", 0.0)
            + 4.0 * bearing * min(1.0, s)
        )
        return {"temperature_c": temp, "current_a": current, "pressure_bar": pressure, "speed_rpm": rpm}

    def settle(self, s: float, load: float, rpm: float) -> None:
        """Start in steady state (a machine that has been running for a while)."""
        self.state = self.targets(s, load, True, rpm, {})
        self.measured = dict(self.state)

    def step(
        self, s: float, load: float, running: bool, rpm: float, sev: dict[str, float], u: list[float]
    ) -> None:
        """Advance one control tick; ``u`` holds 4 standard normal draws for sensor noise."""
        target = self.targets(s, load, running, rpm, sev)
        st = self.state
        for key, tau in self.taus.items():
            st[key] += (target[key] - st[key]) * (1.0 - math.exp(-self.dt / tau))
        st["speed_rpm"] = rpm
        cav = sev.get("cavitation", 0.0)
        m = self.measured
        m["temperature_c"] = st["temperature_c"] + 0.05 * u[0]
        m["current_a"] = max(0.0, st["current_a"] * (1.0 + 0.005 * u[1]))
        m["pressure_bar"] = max(0.0, st["pressure_bar"] * (1.0 + (0.003 + 0.06 * cav) * u[2]))
        m["speed_rpm"] = max(0.0, rpm + (0.5 * u[3] if s > 0.01 else 0.0))
