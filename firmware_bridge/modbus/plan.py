"""Read planning: turn a checked map into as few Modbus read requests as possible.

config → check → **plan** → gather. Points are grouped per device id and table; within
a group, neighbouring points are merged into one request when

- the span from the first to the last register stays within ``max_registers``
  (125, the Modbus limit for function codes 3/4; ``max_bits`` = 2000 for coils and
  discrete inputs), and
- every hole between two merged points is at most ``max_gap`` unused registers (or
  bits). Default 0: only contiguous points merge, because many devices answer a read
  that touches an unmapped register with an exception.

Among the plans with the fewest requests the planner picks one that reads the fewest
registers, so a hole is read only when that saves a request. (A run of consecutive
points is feasible iff all its sub-runs are, so a small dynamic programme over the
sorted points is exact.)

>>> from firmware_bridge.modbus.regmap import parse_map
>>> m = parse_map({"points": [
...     {"name": "a", "table": "holding", "address": 0, "type": "float32"},
...     {"name": "b", "table": "holding", "address": 2, "type": "uint16"},
...     {"name": "c", "table": "holding", "address": 5, "type": "uint16"},
...     {"name": "run", "table": "coil", "address": 0},
... ]})
>>> for r in plan_reads(m): print(r)
device 1 holding 0..2 (3 registers): a, b
device 1 holding 5 (1 register): c
device 1 coil 0 (1 bit): run
>>> for r in plan_reads(m, max_gap=2): print(r)
device 1 holding 0..5 (6 registers): a, b, c
device 1 coil 0 (1 bit): run
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.regmap import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    TABLES,
    Point,
    RegisterMap,
)

#: Modbus read function code per table
READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``address`` on ``device_id``."""

    device_id: int
    table: str
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def function_code(self) -> int:
        return READ_FUNCTION[self.table]

    @property
    def is_bit(self) -> bool:
        return self.table in ("coil", "discrete")

    def to_dict(self) -> dict:
        """JSON-friendly form (used by the golden test cases)."""
        return {
            "device_id": self.device_id,
            "table": self.table,
            "address": self.address,
            "count": self.count,
            "points": [p.name for p in self.points],
        }

    def __str__(self) -> str:
        unit = "bit" if self.is_bit else "register"
        last = self.address + self.count - 1
        span = f"{self.address}" if self.count == 1 else f"{self.address}..{last}"
        plural = "" if self.count == 1 else "s"
        names = ", ".join(p.name for p in self.points)
        return f"device {self.device_id} {self.table} {span} ({self.count} {unit}{plural}): {names}"


def plan_reads(
    regmap: RegisterMap,
    max_registers: int | None = None,
    *,
    max_bits: int | None = None,
    max_gap: int | None = None,
) -> list[ReadRequest]:
    """Plan the reads for ``regmap``: per device (map order) and table, by address.

    Limits left as ``None`` come from the map's ``[plan]`` table (defaults 125, 2000, 0).
    """
    max_registers = regmap.max_registers if max_registers is None else max_registers
    max_bits = regmap.max_bits if max_bits is None else max_bits
    max_gap = regmap.max_gap if max_gap is None else max_gap
    if not 1 <= max_registers <= MAX_READ_REGISTERS:
        raise ConfigError(f"max_registers: {max_registers} is not in 1..{MAX_READ_REGISTERS}")
    if not 1 <= max_bits <= MAX_READ_BITS:
        raise ConfigError(f"max_bits: {max_bits} is not in 1..{MAX_READ_BITS}")
    if max_gap < 0:
        raise ConfigError(f"max_gap: {max_gap} must be >= 0")

    groups: dict[tuple[int, str], list[Point]] = {}
    for p in regmap.points:
        groups.setdefault((p.device_id, p.table), []).append(p)
    order = {dev: i for i, dev in enumerate(regmap.device_ids)}
    requests: list[ReadRequest] = []
    for dev, table in sorted(groups, key=lambda k: (order[k[0]], TABLES.index(k[1]))):
        points = sorted(groups[(dev, table)], key=lambda p: p.address)
        limit = max_bits if table in ("coil", "discrete") else max_registers
        for run in _split(points, limit, max_gap):
            start, end = run[0].address, max(p.end for p in run)
            requests.append(ReadRequest(dev, table, start, end - start, tuple(run)))
    return requests


def _split(points: list[Point], limit: int, max_gap: int) -> list[list[Point]]:
    """Split address-sorted, non-overlapping points into runs: fewest runs, then fewest
    registers read. ``best[j]`` is the best (runs, registers) for the first ``j`` points."""
    n = len(points)
    inf = (n + 1, 1 << 30)
    best: list[tuple[int, int]] = [(0, 0)] + [inf] * n
    cut = [0] * (n + 1)  # where the last run of the best plan for points[:j] starts
    for j in range(1, n + 1):
        last = points[j - 1]
        end = last.end
        i = j - 1
        while i >= 0:
            first = points[i]
            if end - first.address > limit:
                break
            cand = (best[i][0] + 1, best[i][1] + end - first.address)
            if cand < best[j]:
                best[j], cut[j] = cand, i
            if i > 0 and first.address - points[i - 1].end > max_gap:
                break
            i -= 1
    runs: list[list[Point]] = []
    j = n
    while j > 0:
        runs.append(points[cut[j] : j])
        j = cut[j]
    runs.reverse()
    return runs
