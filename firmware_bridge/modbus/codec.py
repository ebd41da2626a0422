"""Registers ↔ values for one point (pure, no I/O).

A value of ``n`` registers is the big-endian bytes of its type, cut into ``n`` 16-bit
words; ``word_order = "little"`` sends the last word first and ``byte_order =
"little"`` swaps the two bytes inside every word. The four usual layouts of a float32
(the value 1.0 is ``0x3F800000``)::

    byte_order  word_order  registers        often called
    big         big         0x3F80 0x0000    ABCD (Modbus standard)
    big         little      0x0000 0x3F80    CDAB (word swap)
    little      big         0x803F 0x0000    BADC (byte swap)
    little      little      0x0000 0x803F    DCBA

A decoded value is ``raw * scale + offset``; :func:`encode_value` inverts that (and
rounds for integer types). ``bool`` points read as 0.0 or 1.0 (any non-zero register
counts as 1).

>>> from firmware_bridge.modbus.regmap import Point
>>> p = Point("t", 1, "holding", 0, "float32", word_order="little")
>>> [hex(r) for r in encode_value(p, 1.0)]
['0x0', '0x3f80']
>>> decode_point(p, [0x0000, 0x3F80])
1.0
>>> q = Point("v", 1, "input", 0, "int16", scale=0.1, offset=-5.0)
>>> encode_value(q, 20.0), round(decode_point(q, [250]), 6)
([250], 20.0)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.plan import ReadRequest
from firmware_bridge.modbus.regmap import Point

#: struct format (big-endian value) per type
_FORMAT = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
    "float32": "f", "float64": "d", "bool": "H",
}
_INT_RANGE = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
}

#: ``decoder(data, i)`` decodes the point whose first register (or bit) is ``data[i]``
Decoder = Callable[[Sequence[int], int], float]


def make_decoder(point: Point) -> Decoder:
    """Build a fast decoder for ``point`` (struct formats precompiled)."""
    if point.is_bit:
        return lambda data, i: 1.0 if data[i] else 0.0
    if point.type == "bool":
        return lambda data, i: 1.0 if data[i] else 0.0
    n = point.width
    words = struct.Struct(("<" if point.byte_order == "little" else ">") + f"{n}H")
    value = struct.Struct(">" + _FORMAT[point.type])
    reverse = point.word_order == "little" and n > 1
    scale, offset = point.scale, point.offset
    plain = scale == 1.0 and offset == 0.0

    def decode(data: Sequence[int], i: int) -> float:
        w = data[i : i + n]
        if reverse:
            w = w[::-1]
        raw = value.unpack(words.pack(*w))[0]
        return float(raw) if plain else raw * scale + offset

    return decode


def decode_point(point: Point, registers: Sequence[int]) -> float:
    """Decode one point from its own registers (or ``[bit]``)."""
    if len(registers) < point.width:
        raise ValueError(f"{point.name}: needs {point.width} registers, got {len(registers)}")
    return make_decoder(point)(list(registers), 0)


def decode_values(request: ReadRequest, data: Sequence[int]) -> dict[str, float]:
    """Decode every point of ``request`` from the registers (or bits) it returned.

    >>> from firmware_bridge.modbus.regmap import parse_map
    >>> from firmware_bridge.modbus.plan import plan_reads
    >>> m = parse_map({"points": [
    ...     {"name": "a", "table": "holding", "address": 0, "type": "int16"},
    ...     {"name": "b", "table": "holding", "address": 1, "type": "uint32"}]})
    >>> decode_values(plan_reads(m)[0], [0xFFFF, 0x0001, 0x0000])
    {'a': -1.0, 'b': 65536.0}
    """
    if len(data) < request.count:
        raise ValueError(
            f"device {request.device_id} {request.table} {request.address}: "
            f"expected {request.count} values, got {len(data)}"
        )
    base = request.address
    return {p.name: make_decoder(p)(data, p.address - base) for p in request.points}


def encode_value(point: Point, value: float | int | bool) -> list[int]:
    """Registers (or ``[0|1]`` for a bit) that :func:`decode_point` reads back as ``value``.

    Raises :class:`ConfigError` if the value does not fit the point's type.
    """
    if point.is_bit or point.type == "bool":
        return [1 if value else 0]
    if isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
        raw: float | int = value  # exact, also beyond float64's 53-bit mantissa
    else:
        raw = (value - point.offset) / point.scale
    fmt = _FORMAT[point.type]
    if point.type in _INT_RANGE:
        if not math.isfinite(raw):
            raise ConfigError(f"{point.name}: {value!r} is not a finite number")
        raw = round(raw)
        lo, hi = _INT_RANGE[point.type]
        if not lo <= raw <= hi:
            raise ConfigError(
                f"{point.name}: {value!r} (raw {raw}) does not fit {point.type} ({lo}..{hi})"
            )
    try:
        packed = struct.pack(">" + fmt, raw)
    except (struct.error, OverflowError):
        raise ConfigError(f"{point.name}: {value!r} does not fit {point.type}") from None
    n = point.width
    words = list(struct.unpack(("<" if point.byte_order == "little" else ">") + f"{n}H", packed))
    if point.word_order == "little":
        words.reverse()
    return words
