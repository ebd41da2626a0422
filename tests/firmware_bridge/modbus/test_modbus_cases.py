"""Golden register-map cases, as in Telegraf's modbus input: one folder per case.

``tests/cases/modbus_<name>/map.toml`` with either

- ``init.err``: the exact one-line error loading the map must give, or
- ``expected.jsonl``: lines ``{"read": {...}}`` (the planned reads, in order, all of
  them) and ``{"point": name, "registers": [...], "value": v}`` (raw registers, written
  by hand, that must decode to ``v``). The value lines are also served by a real
  pymodbus server and polled through ``ModbusSource``, end to end.

To add a case, add a folder; this test picks it up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.codec import decode_point
from firmware_bridge.modbus.plan import plan_reads
from firmware_bridge.modbus.regmap import load_map
from firmware_bridge.sim.modbus_server import ModbusTestServer
from firmware_bridge.sources.modbus import ModbusSource

CASES = Path(__file__).resolve().parents[2] / "cases"
CASE_DIRS = sorted(d for d in CASES.glob("*") if (d / "map.toml").is_file())


def _expected(case: Path) -> tuple[list[dict], list[dict]]:
    reads, values = [], []
    for line in (case / "expected.jsonl").read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            (reads if "read" in item else values).append(item)
    return [r["read"] for r in reads], values


def test_there_are_enough_cases():
    """Valid merges, the 125 split, gaps and each kind of error are covered."""
    names = {d.name for d in CASE_DIRS}
    assert len(names) >= 10
    assert {"modbus_valid_merge", "modbus_split_125", "modbus_gap_merge",
            "modbus_err_overlap", "modbus_err_unknown_key", "modbus_err_bad_toml"} <= names
    for d in CASE_DIRS:
        assert (d / "init.err").is_file() != (d / "expected.jsonl").is_file(), d.name


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda d: d.name)
def test_case(case: Path, monkeypatch):
    monkeypatch.chdir(case)  # so messages name "map.toml", as the golden files do
    if (case / "init.err").is_file():
        expected = (case / "init.err").read_text().strip()
        with pytest.raises(ConfigError) as err:
            load_map("map.toml")
        assert str(err.value) == expected
        assert "\n" not in str(err.value)
        return
    regmap = load_map("map.toml")
    reads, values = _expected(case)
    if reads:
        assert [r.to_dict() for r in plan_reads(regmap)] == reads
    for item in values:
        got = decode_point(regmap.point(item["point"]), item["registers"])
        assert np.float32(got) == pytest.approx(np.float32(item["value"]), rel=1e-6), item


@pytest.mark.parametrize(
    "case", [d for d in CASE_DIRS if (d / "expected.jsonl").is_file() and _expected(d)[1]],
    ids=lambda d: d.name,
)
def test_case_values_through_a_real_server(case: Path):
    """Serve the golden registers with pymodbus's server and poll them once."""
    regmap = load_map(case / "map.toml")
    _, values = _expected(case)
    devices = {dev: {} for dev in regmap.device_ids}
    with ModbusTestServer(devices) as server:
        for item in values:
            p = regmap.point(item["point"])
            server.set_registers(p.device_id, p.table, p.address, item["registers"])
        source = ModbusSource(server.url, lambda b: None, map=regmap, timeout_s=1.0)
        try:
            block = source.poll_once()
        finally:
            source.stop()
    assert block.point_ok.all()
    row = dict(zip(block.channels, block.samples[0]))
    for item in values:
        assert row[item["point"]] == pytest.approx(np.float32(item["value"]), rel=1e-6), item
