"""Register maps: load a TOML map and check it into frozen dataclasses.

A map names the points to poll (config → **check** → plan → gather)::

    [defaults]              # optional: device_id, byte_order, word_order
    device_id = 1

    [plan]                  # optional: how reads are planned (see plan.py)
    max_gap = 4             # read across up to 4 unused registers if it saves a request

    [[points]]
    name = "temperature_c"
    table = "input"         # holding | input | coil | discrete
    address = 0             # 0-based protocol address, 0..65535
    type = "float32"        # int16 uint16 int32 uint32 int64 float32 float64 bool
    byte_order = "big"      # bytes inside each 16-bit register
    word_order = "big"      # order of the registers of a multi-register value
    scale = 1.0             # value = raw * scale + offset
    offset = 0.0
    unit = "degC"

Every mistake a user can make is one :class:`ConfigError` whose message starts with the
file and the key path (points are counted from 0, as in the TOML array)::

    pump.toml: points[3].address: 70000 is not in 0..65535
    pump.toml: points[4].name: 'temp' is already used by points[1]
    pump.toml: points[2].adress: unknown key (did you mean 'address'?)
    pump.toml:7:9: invalid TOML: Expected '=' after a key in a key/value pair
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError

TABLES = ("holding", "input", "coil", "discrete")
BIT_TABLES = ("coil", "discrete")
#: registers used by each type on a register table (a bit table holds only ``bool``)
TYPE_WIDTH = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4,
    "float32": 2, "float64": 4, "bool": 1,
}
ORDERS = ("big", "little")
#: Modbus limits per read request (function codes 3/4 and 1/2)
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_POINT_KEYS = (
    "name", "device_id", "table", "address", "type", "byte_order", "word_order",
    "scale", "offset", "unit",
)
_DEFAULT_KEYS = ("device_id", "byte_order", "word_order")
_PLAN_KEYS = ("max_gap", "max_registers", "max_bits")
_TOP_KEYS = ("points", "defaults", "plan")


@dataclass(frozen=True, slots=True)
class Point:
    """One named value on one device, checked.

    >>> p = Point("flow", 1, "holding", 10, "float32")
    >>> p.width, p.end, p.is_bit
    (2, 12, False)
    """

    name: str
    device_id: int
    table: str
    address: int
    type: str
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def is_bit(self) -> bool:
        """True for coils and discrete inputs (addressed per bit)."""
        return self.table in BIT_TABLES

    @property
    def width(self) -> int:
        """Registers (or bits, on a bit table) this point occupies."""
        return 1 if self.is_bit else TYPE_WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last address used."""
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A checked register map: the points in file order, and how to plan reads."""

    points: tuple[Point, ...]
    source: str = "<map>"
    #: largest run of unused registers/bits a read may span to save a request
    max_gap: int = 0
    max_registers: int = MAX_READ_REGISTERS
    max_bits: int = MAX_READ_BITS

    @property
    def names(self) -> tuple[str, ...]:
        """Point names, in map order (the channels of the source's blocks)."""
        return tuple(p.name for p in self.points)

    @property
    def device_ids(self) -> tuple[int, ...]:
        """Device ids in order of first appearance."""
        return tuple(dict.fromkeys(p.device_id for p in self.points))

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------- loading
def load_map(path: str | Path) -> RegisterMap:
    """Read and check a TOML register map; a bad map is one :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read register map: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: register map is not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}{_toml_where(str(exc))}") from None
    return parse_map(data, source=str(path))


def _toml_where(msg: str) -> str:
    """``'... (at line 3, column 7)'`` → ``':3:7: invalid TOML: ...'``."""
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if m is None:
        m2 = re.search(r"\s*\(at end of document\)$", msg)
        if m2 is None:
            return f": invalid TOML: {msg}"
        return f": invalid TOML at end of document: {msg[: m2.start()]}"
    return f":{m.group(1)}:{m.group(2)}: invalid TOML: {msg[: m.start()]}"


def parse_map(data: dict[str, Any], source: str = "<map>") -> RegisterMap:
    """Check a map given as a dict (e.g. from a gateway config) into a :class:`RegisterMap`.

    >>> m = parse_map({"points": [{"name": "t", "table": "input", "address": 0, "type": "int16"}]})
    >>> m.points[0]
    Point(name='t', device_id=1, table='input', address=0, type='int16', byte_order='big', word_order='big', scale=1.0, offset=0.0, unit='')
    >>> parse_map({"points": [{"name": "t", "table": "coil", "address": 0, "type": "float32"}]}, "m.toml")
    Traceback (most recent call last):
    ...
    firmware_bridge.errors.ConfigError: m.toml: points[0].type: 'float32' does not fit a coil table (only 'bool')
    """
    c = _Checker(source)
    if not isinstance(data, dict):
        raise c.error("", f"expected a table, got {type(data).__name__}")
    c.keys(data, _TOP_KEYS, "")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise c.error("defaults", "must be a table ([defaults])")
    c.keys(defaults, _DEFAULT_KEYS, "defaults")
    dev = c.device_id(defaults.get("device_id", 1), "defaults.device_id")
    bo = c.choice(defaults.get("byte_order", "big"), ORDERS, "defaults.byte_order")
    wo = c.choice(defaults.get("word_order", "big"), ORDERS, "defaults.word_order")

    plan = data.get("plan", {})
    if not isinstance(plan, dict):
        raise c.error("plan", "must be a table ([plan])")
    c.keys(plan, _PLAN_KEYS, "plan")
    max_registers = c.integer(plan.get("max_registers", MAX_READ_REGISTERS), 1, MAX_READ_REGISTERS, "plan.max_registers")
    max_bits = c.integer(plan.get("max_bits", MAX_READ_BITS), 1, MAX_READ_BITS, "plan.max_bits")
    max_gap = c.integer(plan.get("max_gap", 0), 0, max_registers - 1, "plan.max_gap")

    raw_points = data.get("points")
    if raw_points is None:
        raise c.error("points", "the map has no points (add [[points]] tables)")
    if not isinstance(raw_points, list):
        raise c.error("points", "must be an array of tables ([[points]])")
    if not raw_points:
        raise c.error("points", "the map has no points (add [[points]] tables)")

    points = [c.point(i, raw, dev, bo, wo) for i, raw in enumerate(raw_points)]
    for i, p in enumerate(points):
        if not p.is_bit and p.width > max_registers:
            raise c.error(
                "plan.max_registers",
                f"{max_registers} is less than the {p.width} registers of points[{i}] ({p.name}, {p.type})",
            )
    c.unique_names(points)
    c.no_overlap(points)
    return RegisterMap(tuple(points), source, max_gap, max_registers, max_bits)


class _Checker:
    """Checks values and builds the one-line error with the source and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, msg: str) -> ConfigError:
        where = f"{self.source}: {path}" if path else self.source
        return ConfigError(f"{where}: {msg}")

    def keys(self, table: dict, allowed: tuple[str, ...], path: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
                raise self.error(f"{path}.{key}" if path else key, f"unknown key ({hint})")

    def integer(self, value: Any, lo: int, hi: int, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"{value!r} is not an integer")
        if not lo <= value <= hi:
            raise self.error(path, f"{value} is not in {lo}..{hi}")
        return value

    def device_id(self, value: Any, path: str) -> int:
        return self.integer(value, 0, 255, path)

    def choice(self, value: Any, allowed: tuple[str, ...], path: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close and close[0] != value else ""
            raise self.error(path, f"{value!r} is not one of {', '.join(allowed)}{hint}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(path, f"{value!r} is not a number")
        if not math.isfinite(value):
            raise self.error(path, f"{value!r} is not a finite number")
        return float(value)

    def point(self, i: int, raw: Any, dev: int, bo: str, wo: str) -> Point:
        at = f"points[{i}]"
        if not isinstance(raw, dict):
            raise self.error(at, "must be a table ([[points]])")
        self.keys(raw, _POINT_KEYS, at)
        for required in ("name", "table", "address"):
            if required not in raw:
                raise self.error(f"{at}.{required}", "is missing")
        name = raw["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise self.error(
                f"{at}.name",
                f"{name!r} is not a valid name (letters, digits, _ . -; not starting with a digit)",
            )
        table = self.choice(raw["table"], TABLES, f"{at}.table")
        bit = table in BIT_TABLES
        typ = raw.get("type", "bool" if bit else "uint16")
        typ = self.choice(typ, tuple(TYPE_WIDTH), f"{at}.type")
        if bit and typ != "bool":
            raise self.error(f"{at}.type", f"{typ!r} does not fit a {table} table (only 'bool')")
        if isinstance(raw["address"], str):
            raise self.error(
                f"{at}.address",
                f"{raw['address']!r} is not an integer (use the 0-based protocol address: "
                "register 40001 is holding address 0)",
            )
        address = self.integer(raw["address"], 0, 65535, f"{at}.address")
        width = 1 if bit else TYPE_WIDTH[typ]
        if address + width - 1 > 65535:
            raise self.error(
                f"{at}.address",
                f"{address} + {width} registers of {typ} runs past 65535",
            )
        scale = self.number(raw.get("scale", 1.0), f"{at}.scale")
        if scale == 0:
            raise self.error(f"{at}.scale", "must not be 0 (every value would read as the offset)")
        if typ == "bool":
            for key in ("scale", "offset", "byte_order", "word_order"):
                if key in raw:
                    raise self.error(f"{at}.{key}", "a bool point reads as 0 or 1; remove this key")
        unit = raw.get("unit", "")
        if not isinstance(unit, str):
            raise self.error(f"{at}.unit", f"{unit!r} is not a string")
        return Point(
            name=name,
            device_id=self.device_id(raw.get("device_id", dev), f"{at}.device_id"),
            table=table,
            address=address,
            type=typ,
            byte_order=self.choice(raw.get("byte_order", bo), ORDERS, f"{at}.byte_order"),
            word_order=self.choice(raw.get("word_order", wo), ORDERS, f"{at}.word_order"),
            scale=scale,
            offset=self.number(raw.get("offset", 0.0), f"{at}.offset"),
            unit=unit,
        )

    def unique_names(self, points: list[Point]) -> None:
        seen: dict[str, int] = {}
        for i, p in enumerate(points):
            if p.name in seen:
                raise self.error(f"points[{i}].name", f"{p.name!r} is already used by points[{seen[p.name]}]")
            seen[p.name] = i

    def no_overlap(self, points: list[Point]) -> None:
        """Two points may not share a register (or bit) of the same device and table."""
        by_area: dict[tuple[int, str], list[tuple[int, Point]]] = {}
        for i, p in enumerate(points):
            by_area.setdefault((p.device_id, p.table), []).append((i, p))
        clashes = []
        for (dev, table), items in by_area.items():
            items.sort(key=lambda ip: (ip[1].address, ip[0]))
            widest = items[0]  # the point reaching furthest so far
            for j, b in items[1:]:
                if b.address < widest[1].end:
                    first, second = sorted((widest, (j, b)), key=lambda ip: ip[0])
                    clashes.append((second[0], first, second, dev, table))
                if b.end > widest[1].end:
                    widest = (j, b)
        if clashes:
            _, (i, a), (j, b), dev, table = min(clashes, key=lambda c: c[0])
            verb = "overlaps" if b.width == 1 else "overlap"
            raise self.error(
                f"points[{j}].address",
                f"{_span(b)} {verb} {a.name!r} (points[{i}], {_span(a)}) on device {dev} {table}",
            )


def _span(p: Point) -> str:
    unit = "bit" if p.is_bit else "register"
    if p.width == 1:
        return f"{unit} {p.address}"
    return f"{unit}s {p.address}..{p.end - 1}"
