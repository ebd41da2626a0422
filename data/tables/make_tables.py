"""Make the small fixture tables under data/tables/ from the simulated pump.

    .venv/bin/python data/tables/make_tables.py

``pump_cavitation.csv``: one row per simulated second (ISO time column ``t``, then
temperature_c, current_a, pressure_bar, speed_rpm as the sensors report them), 600 rows;
a load step at row 150 (healthy), cavitation ramping in from row 400 over 20 s (the
pressure drops by up to 20 % and fluctuates). Rows 0:400 are healthy, 400: faulty.
Deterministic (seed 7); the simulator runs at 1000 samples/s to keep this quick.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_bridge.sim.machine import Machine

ROOT = Path(__file__).resolve().parent
COLUMNS = ("temperature_c", "current_a", "pressure_bar", "speed_rpm")


def simulate(rows: int = 600, fault_row: int = 400, fault: str = "cavitation",
             rate: float = 1000.0, seed: int = 7) -> list[dict]:
    from firmware_bridge.sim.schedule import SetPoint

    m = Machine(rate=rate, seed=seed, schedule=[SetPoint(at=150.0, load=0.9, ramp_s=10.0)])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(rows):
        if i == fault_row:
            m.inject(fault, severity=1.0, ramp_s=20.0)
        m.generate(int(rate))
        v = m.slow_values()
        out.append({"t": (t0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S"),
                    **{c: f"{v[c]:.5f}" for c in COLUMNS}})
    return out


def write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", *COLUMNS], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    write(ROOT / "pump_cavitation.csv", simulate())
    print(f"wrote {ROOT / 'pump_cavitation.csv'}", file=sys.stderr)
