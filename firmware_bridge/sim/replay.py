"""Replay a recorded CSV table through the simulator's outputs, and record one.

File format (what :func:`record` writes; any CSV with a header line works)::

    # rate: 2048                 optional: the rate it was recorded at
    # any other comment
    ax,ay,az,temperature_c       header: column names
    0.0123,-0.0456,0.0071,51.2   one row per sample

:class:`Replay` has the output side of :class:`~firmware_bridge.sim.machine.Machine`
(``channels``, ``generate``, ``slow_values``, ``stop``/``reset``, ``sensor_silent``), so the
serial device, the Modbus device and ``SimSource`` serve a recording exactly as they serve
the simulated machine. Rows are played at ``rate`` rows per second (default: the file's
``# rate:``); a different rate plays the same rows faster or slower (no resampling).
Columns named like slow values (``temperature_c``, ``current_a``, ``pressure_bar``,
``speed_rpm``) feed :meth:`Replay.slow_values`. At the end of the table the replay loops
or, with ``loop=False``, goes silent (zeros, ``sensor_silent``), like a sensor that stops.

>>> import io, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
>>> _ = open(path, "w").write("# rate: 1000\\nax,ay,temperature_c\\n1,2,40\\n3,4,41\\n5,6,42\\n")
>>> r = Replay(path, loop=True)
>>> r.channels, r.rate, r.generate(4).tolist(), r.slow_values()
(('ax', 'ay'), 1000.0, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [1.0, 2.0]], {'temperature_c': 40.0})
"""

from __future__ import annotations

import math
import os

import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.sim.machine import SLOW_CHANNELS, Machine


def read_table(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray, float | None]:
    """Read a recorded CSV: ``(column names, float32 rows [n, cols], rate or None)``."""
    rate: float | None = None
    names: tuple[str, ...] | None = None
    body: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                s = line.strip()
                if not s:
                    continue
                if s.startswith("#"):
                    key, _, val = s[1:].partition(":")
                    if key.strip() == "rate":
                        try:
                            rate = float(val)
                        except ValueError:
                            raise ConfigError(f"{path}:{lineno}: rate {val.strip()!r} is not a number") from None
                    continue
                if names is None:
                    names = tuple(c.strip() for c in s.split(","))
                    continue
                body.append(s)
    except OSError as exc:
        raise ConfigError(f"replay file {path}: {exc.strerror}") from None
    if names is None or not body:
        raise ConfigError(f"replay file {path}: needs a header line of column names and rows")
    try:
        rows = np.loadtxt(body, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise ConfigError(f"replay file {path}: {exc}") from None
    if rows.shape[1] != len(names):
        raise ConfigError(f"replay file {path}: {len(names)} names in the header, {rows.shape[1]} columns")
    return names, rows, rate


class Replay:
    """Play the ``columns`` of a recorded table at ``rate`` rows/s (see module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        columns: list[str] | tuple[str, ...] | None = None,
        rate: float | None = None,
        loop: bool = True,
        coast_s: float = 2.0,
        start_s: float = 3.0,
    ) -> None:
        names, rows, file_rate = read_table(path)
        slow = [c for c in names if c in SLOW_CHANNELS]
        if columns is None:
            columns = tuple(c for c in names if c not in SLOW_CHANNELS) or names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConfigError(f"--columns: {', '.join(missing)} not in {path} (has {', '.join(names)})")
        self.path = str(path)
        self.channels = tuple(columns)
        self.rate = float(rate or file_rate or 25600.0)
        if not self.rate > 0:
            raise ConfigError(f"rate: {self.rate} must be > 0")
        self.loop = loop
        self.coast_s, self.start_s = coast_s, start_s
        self._data = np.ascontiguousarray(rows[:, [names.index(c) for c in self.channels]])
        self._slow_names = tuple(slow)
        self._slow = rows[:, [names.index(c) for c in slow]] if slow else None
        self._pos = 0
        self._n = 0
        self._gain = 1.0
        self._running = True
        self.exhausted = False

    @property
    def time(self) -> float:
        return self._n / self.rate

    @property
    def stopped(self) -> bool:
        return not self._running

    @property
    def sensor_silent(self) -> bool:
        return self.exhausted

    @property
    def status(self) -> str:
        if not self._running:
            return "coasting" if self._gain > 0.01 else "stopped"
        return "running" if self._gain >= 1.0 else "starting"

    def stop(self) -> None:
        self._running = False

    def reset(self) -> None:
        self._running = True

    def inject(self, fault: str, severity: float = 1.0, ramp_s: float = 0.0) -> None:
        raise ConfigError(f"fault {fault}: faults can be injected into the simulated machine, not into a replay")

    def clear_faults(self, fault: str | None = None) -> None:
        """Nothing to clear: a recording has the faults it was recorded with."""

    def active_faults(self) -> dict[str, float]:
        return {}

    def slow_values(self) -> dict[str, float]:
        if self._slow is None:
            return {}
        row = self._slow[max(self._pos - 1, 0)]
        out = {k: float(v) for k, v in zip(self._slow_names, row.tolist())}
        if "speed_rpm" in out:
            out["speed_rpm"] *= self._gain
        return out

    def generate(self, n: int) -> np.ndarray:
        """Next ``n`` rows of the chosen columns, float32 ``[n, len(columns)]``."""
        out = np.zeros((n, len(self.channels)), dtype=np.float32)
        total = len(self._data)
        pos = 0
        while pos < n and not self.exhausted:
            m = min(n - pos, total - self._pos)
            out[pos : pos + m] = self._data[self._pos : self._pos + m]
            pos += m
            self._pos += m
            if self._pos >= total:
                if self.loop:
                    self._pos = 0
                else:
                    self.exhausted = True
        self._n += n
        self._apply_gain(out)
        return out

    def _apply_gain(self, out: np.ndarray) -> None:
        dt = len(out) / self.rate
        g0 = self._gain
        if self._running:
            self._gain = min(1.0, g0 + dt / max(self.start_s, 1e-3))
        else:
            self._gain = g0 * math.exp(-dt / self.coast_s)
        if g0 != 1.0 or self._gain != 1.0:
            out *= np.linspace(g0, self._gain, len(out), dtype=np.float32)[:, None]


def record(
    path: str | os.PathLike,
    machine: Machine,
    seconds: float,
    slow: tuple[str, ...] = (),
    comment: str = "",
) -> int:
    """Run ``machine`` for ``seconds`` and write its vibration (plus the ``slow`` values,
    sampled at every control tick and held) as a replayable CSV; returns the row count."""
    n = int(round(seconds * machine.rate))
    block = max(1, int(machine.rate // 100))
    parts, slow_rows = [], []
    done = 0
    while done < n:
        m = min(block, n - done)
        parts.append(machine.generate(m))
        sv = machine.slow_values()
        slow_rows.append(np.repeat([[sv[k] for k in slow]], m, axis=0))
        done += m
    data = np.concatenate(parts)
    if slow:
        data = np.hstack([data, np.concatenate(slow_rows)])
    names = tuple(machine.channels) + tuple(slow)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"# rate: {machine.rate:g}\n")
        for line in comment.splitlines():
            fh.write(f"# {line}\n")
        fh.write(",".join(names) + "\n")
        np.savetxt(fh, data, fmt="%.4g", delimiter=",")
    return n


def make_sample(path: str | os.PathLike) -> int:
    """Make ``data/sim/pump_outer_race_2k.csv``: 2 s of the pump at 2048 samples/s,
    healthy for 0.8 s, then an outer-race fault (seed 7)."""
    from firmware_bridge.sim.faults import FaultEvent

    m = Machine("pump", rate=2048.0, seed=7, faults=[FaultEvent("outer_race", at=0.8)])
    return record(
        path, m, 2.0, slow=("temperature_c", "speed_rpm"),
        comment="made by firmware_bridge.sim.replay.make_sample (pump, seed 7, outer_race at 0.8 s)",
    )


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(make_sample(sys.argv[1] if len(sys.argv) > 1 else "data/sim/pump_outer_race_2k.csv"))
