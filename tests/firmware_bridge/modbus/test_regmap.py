"""Register maps: checking, planning and the register codec (pure, no I/O).

The golden folders in tests/cases/modbus_* cover the exact messages of each error kind;
here are the properties a user relies on beyond single examples.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.codec import decode_point, decode_values, encode_value
from firmware_bridge.modbus.plan import plan_reads
from firmware_bridge.modbus.regmap import TYPE_WIDTH, Point, RegisterMap, load_map, parse_map


def pt(name, address, type=None, table="holding", **kw):
    """A raw point table as it comes from TOML (type left to its default if None)."""
    d = {"name": name, "table": table, "address": address, **kw}
    if type is not None:
        d["type"] = type
    return d


def test_defaults_apply_and_points_can_override():
    m = parse_map({
        "defaults": {"device_id": 7, "word_order": "little"},
        "points": [pt("a", 0, "float32"), pt("b", 2, "float32", device_id=8, word_order="big")],
    })
    a, b = m.points
    assert (a.device_id, a.word_order, a.byte_order) == (7, "little", "big")
    assert (b.device_id, b.word_order) == (8, "big")
    assert m.names == ("a", "b") and m.device_ids == (7, 8)


def test_type_defaults_by_table():
    m = parse_map({"points": [{"name": "r", "table": "input", "address": 0},
                              {"name": "c", "table": "coil", "address": 0}]})
    assert [p.type for p in m.points] == ["uint16", "bool"]


def test_points_are_frozen():
    m = parse_map({"points": [pt("a", 0)]})
    with pytest.raises(AttributeError):
        m.points[0].address = 3  # type: ignore[misc]


def test_the_example_maps_load(tmp_path):
    """The maps shipped as package data are valid (the examples' and the simulator's)."""
    from sensorml.examples import write_examples

    maps = [p for p in write_examples(tmp_path) if p.parent.name == "maps"]
    assert {p.name for p in maps} == {"example_vfd_pump.toml", "sim_pump.toml"}
    for path in maps:
        m = load_map(path)
        assert plan_reads(m), path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"point": []}, "m.toml: point: unknown key (did you mean 'points'?)"),
        ({"points": {"name": "a"}}, "m.toml: points: must be an array of tables ([[points]])"),
        ({"points": [pt("a", 0, scale=0)]}, "m.toml: points[0].scale: must not be 0"),
        ({"points": [pt("a", 0, scale="x")]}, "m.toml: points[0].scale: 'x' is not a number"),
        ({"points": [pt("a", 0, "bool", scale=2.0)]}, "m.toml: points[0].scale: a bool point reads as 0 or 1"),
        ({"points": [pt("1st", 0)]}, "m.toml: points[0].name: '1st' is not a valid name"),
        ({"points": [pt("a", 0, "float16")]}, "m.toml: points[0].type: 'float16' is not one of"),
        ({"points": [pt("a", 0, table="holdings")]}, "(did you mean 'holding'?)"),
        ({"points": [pt("a", True)]}, "m.toml: points[0].address: True is not an integer"),
        ({"points": [pt("a", -1)]}, "m.toml: points[0].address: -1 is not in 0..65535"),
        ({"plan": {"max_registers": 200}, "points": [pt("a", 0)]}, "m.toml: plan.max_registers: 200 is not in 1..125"),
        ({"plan": {"max_registers": 2}, "points": [pt("a", 0, "int64")]},
         "m.toml: plan.max_registers: 2 is less than the 4 registers of points[0] (a, int64)"),
        ({"plan": {"max_gap": 4, "max_registers": 4}, "points": [pt("a", 0)]}, "plan.max_gap: 4 is not in 0..3"),
        ({"points": [pt("a", 0, unit=3)]}, "m.toml: points[0].unit: 3 is not a string"),
    ],
)
def test_bad_maps_give_one_clear_error(data, message):
    with pytest.raises(ConfigError) as err:
        parse_map(data, source="m.toml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overlap_reports_the_later_point_even_when_not_adjacent():
    # a (int64 0..3) covers c at 2 although b at 1 comes between them in address order
    with pytest.raises(ConfigError, match=r"points\[1\]\.address: register 1 overlaps 'a'"):
        parse_map({"points": [pt("a", 0, "int64"), pt("b", 1), pt("c", 2)]})


def test_load_map_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read register map"):
        load_map(missing)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[[points]]\nname = "a\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:2:\d+: invalid TOML"):
        load_map(bad)


# ----------------------------------------------------------------------- codec
ORDERS = ["big", "little"]
_RANGES = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
}


def _value_strategy(typ):
    if typ in _RANGES:
        return st.integers(*_RANGES[typ])
    if typ == "bool":
        return st.booleans()
    width = 32 if typ == "float32" else 64
    return st.floats(allow_nan=False, allow_infinity=False, width=width)


@pytest.mark.parametrize("typ", sorted(TYPE_WIDTH))
@pytest.mark.parametrize(("byte_order", "word_order"), list(itertools.product(ORDERS, ORDERS)))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_encode_then_decode_gives_the_value_back(typ, byte_order, word_order, data):
    p = Point("x", 1, "holding", 0, typ, byte_order, word_order)
    value = data.draw(_value_strategy(typ))
    regs = encode_value(p, value)
    assert len(regs) == p.width and all(0 <= r <= 0xFFFF for r in regs)
    got = decode_point(p, regs)
    if typ == "float64" or (typ in _RANGES and abs(value) < 2**53):
        assert got == float(value)
    else:  # float32, or integers beyond float64's 53-bit mantissa
        assert np.float32(got) == np.float32(value)


def test_word_order_little_reverses_the_words_of_a_64_bit_value():
    big = Point("x", 1, "holding", 0, "int64")
    little = Point("x", 1, "holding", 0, "int64", word_order="little")
    assert encode_value(little, 0x0102030405060708) == encode_value(big, 0x0102030405060708)[::-1]


def test_encode_rejects_values_that_do_not_fit():
    p = Point("speed", 1, "holding", 0, "uint16", scale=0.1)
    assert encode_value(p, 6553.5) == [65535]
    with pytest.raises(ConfigError, match=r"speed: 6553.6 \(raw 65536\) does not fit uint16"):
        encode_value(p, 6553.6)
    with pytest.raises(ConfigError, match="does not fit float32"):
        encode_value(Point("f", 1, "holding", 0, "float32"), 1e39)


def test_decode_values_slices_each_point_from_one_read():
    m = parse_map({"points": [pt("a", 0, "float32"), pt("b", 2, "int16"), pt("c", 3, "uint32")]})
    (req,) = plan_reads(m)
    regs = [*struct.unpack(">HH", struct.pack(">f", -1.25)), 0xFFFE, 0, 7]
    assert decode_values(req, regs) == {"a": -1.25, "b": -2.0, "c": 7.0}
    with pytest.raises(ValueError, match="expected 5 values, got 4"):
        decode_values(req, regs[:4])


# ---------------------------------------------------------------------- planning
def _brute_force(points: list[Point], limit: int, max_gap: int) -> tuple[int, int]:
    """Fewest (requests, registers) over every way to cut the sorted points into runs."""
    pts = sorted(points, key=lambda p: p.address)
    best = None
    for cuts in itertools.product([False, True], repeat=len(pts) - 1):
        runs, cur = [], [pts[0]]
        for cut, p in zip(cuts, pts[1:]):
            if cut:
                runs.append(cur)
                cur = [p]
            else:
                cur.append(p)
        runs.append(cur)
        ok = all(r[-1].end - r[0].address <= limit for r in runs) and all(
            b.address - a.end <= max_gap for r in runs for a, b in zip(r, r[1:])
        )
        if ok:
            cost = (len(runs), sum(r[-1].end - r[0].address for r in runs))
            best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@st.composite
def register_layouts(draw):
    n = draw(st.integers(1, 8))
    address, points = 0, []
    for i in range(n):
        address += draw(st.integers(0, 6))
        typ = draw(st.sampled_from(["uint16", "float32", "int64"]))
        points.append(Point(f"p{i}", 1, "holding", address, typ))
        address += TYPE_WIDTH[typ]
    return points, draw(st.integers(4, 12)), draw(st.integers(0, 4))


@settings(max_examples=300, deadline=None)
@given(register_layouts())
def test_plan_is_minimal_and_reads_only_what_it_may(layout):
    points, limit, max_gap = layout
    m = RegisterMap(tuple(points), max_registers=limit, max_gap=max_gap)
    plan = plan_reads(m)
    covered = [p.name for r in plan for p in r.points]
    assert sorted(covered) == sorted(p.name for p in points)  # each point exactly once
    for r in plan:
        assert r.count <= limit
        assert r.address == r.points[0].address and r.address + r.count == r.points[-1].end
        assert all(b.address - a.end <= max_gap for a, b in zip(r.points, r.points[1:]))
    assert (len(plan), sum(r.count for r in plan)) == _brute_force(points, limit, max_gap)


def test_plan_groups_per_device_and_table_in_map_order():
    m = parse_map({"points": [
        pt("d2", 0, device_id=2), pt("c", 0, table="coil"), pt("h", 1), pt("i", 0, table="input"),
        pt("h0", 0), pt("d", 0, table="discrete"),
    ]})
    assert [(r.device_id, r.table, r.address, r.count) for r in plan_reads(m)] == [
        (2, "holding", 0, 1), (1, "holding", 0, 2), (1, "input", 0, 1), (1, "coil", 0, 1),
        (1, "discrete", 0, 1),
    ]
