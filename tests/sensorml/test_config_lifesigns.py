"""``[heartbeat]`` and the stale/invalid-input keys of ``gateway.toml``: off unless
configured, checked with everything else, one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sensorml.config import HeartbeatConfig, parse_config
from sensorml.errors import ConfigError

SERIAL = {"url": "serial:///dev/ttyUSB0?format=frames", "channels": ["ax"], "rate": 1000}


def cfg(tmp_path: Path, **tables):
    return parse_config({"device_id": "p1", "source": tables.pop("source", SERIAL), **tables},
                        tmp_path)


def test_no_heartbeat_table_means_no_heartbeat(tmp_path):
    assert cfg(tmp_path).heartbeat is None


def test_heartbeat_tables_load_with_their_defaults(tmp_path):
    hb = cfg(tmp_path, heartbeat={"kind": "modbus-coil", "url": "modbus-tcp://10.0.0.5:502",
                                  "address": 12}).heartbeat
    assert hb == HeartbeatConfig("modbus-coil", "modbus-tcp://10.0.0.5:502", 12, 1, 1.0, 0.25)
    hb = cfg(tmp_path, heartbeat={"kind": "serial", "period": "200ms"}).heartbeat
    assert (hb.kind, hb.period_s, hb.timeout_s) == ("serial", 0.2, 0.1)


@pytest.mark.parametrize(("table", "source", "message"), [
    ({"kind": "coil"}, SERIAL, "heartbeat.kind: 'coil' is not one of modbus-coil, modbus-register, serial"),
    ({"kind": "modbus-coil", "address": 1}, SERIAL, "heartbeat.url: required key is missing"),
    ({"kind": "modbus-coil", "url": "http://plc", "address": 1}, SERIAL,
     "heartbeat.url: 'http://plc' is not a modbus-tcp:// or modbus-rtu:// URL"),
    ({"kind": "modbus-register", "url": "modbus-tcp://plc:99999", "address": 1}, SERIAL,
     "heartbeat.url: modbus-tcp://plc:99999: port 99999 is not in 1..65535"),
    ({"kind": "modbus-coil", "url": "modbus-tcp://plc"}, SERIAL, "heartbeat.address: required key is missing"),
    ({"kind": "modbus-coil", "url": "modbus-tcp://plc", "address": 70000}, SERIAL,
     "heartbeat.address: 70000 is greater than 65535"),
    ({"kind": "modbus-coil", "url": "modbus-tcp://plc", "address": 1, "device_id": 300}, SERIAL,
     "heartbeat.device_id: 300 is greater than 247"),
    ({"kind": "serial", "period": "10ms"}, SERIAL, "heartbeat.period: 0.01 is less than 0.05"),
    ({"kind": "serial", "period": "1s", "timeout": "2s"}, SERIAL,
     "heartbeat.timeout: 2 s is not shorter than heartbeat.period (1 s)"),
    ({"kind": "serial", "perod": "1s"}, SERIAL, "heartbeat.perod: unknown key (did you mean 'period'?)"),
    ({"kind": "serial", "url": "serial:///dev/ttyUSB1"}, SERIAL,
     "heartbeat.url: a serial heartbeat goes on the serial source's line (source.url); leave url out"),
    ({"kind": "serial"}, {"url": "sim://pump"},
     "heartbeat.kind: 'serial' needs a serial:// source (source.url is 'sim://pump')"),
])
def test_heartbeat_mistakes_are_one_line_errors_naming_the_key(tmp_path, table, source, message):
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, source=source, heartbeat=table)
    assert str(e.value) == message


def test_check_config_prints_the_heartbeat_error_in_one_line(tmp_path):
    p = tmp_path / "gateway.toml"
    p.write_text('device_id = "p1"\n[source]\nurl = "sim://pump"\n'
                 '[heartbeat]\nkind = "modbus-coil"\nurl = "modbus-tcp://127.0.0.1:502"\n'
                 'address = -1\n')
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "check-config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "heartbeat.address: -1 is less than 0" in r.stderr


def test_sensor_fault_defaults_are_the_safe_ones(tmp_path):
    wd = cfg(tmp_path).watchdog
    assert (wd.on_sensor_fault, wd.sensor_fault_for_s, wd.frozen_after_s) == ("trip", 2.0, 0.5)
    assert cfg(tmp_path).slow_sources == ()


def test_stale_after_for_every_channel_or_per_channel(tmp_path):
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP

    one = {"url": "modbus-tcp://127.0.0.1:502", "map": str(DEFAULT_MAP), "stale_after": "30s"}
    per = {**one, "stale_after": {"temperature_c": "10s", "pressure_bar": 5}}
    c = cfg(tmp_path, slow_sources=[one, per])
    assert c.slow_sources[0].stale_after == {"*": 30.0}
    assert c.slow_sources[1].stale_after == {"temperature_c": 10.0, "pressure_bar": 5.0}


@pytest.mark.parametrize(("tables", "message"), [
    ({"watchdog": {"on_sensor_fault": "ignore"}},
     "watchdog.on_sensor_fault: 'ignore' is not one of trip, alarm"),
    ({"watchdog": {"sensor_fault_for": "soon"}},
     "watchdog.sensor_fault_for: 'soon' is not a duration (e.g. 30s, 250ms, 2m)"),
    ({"watchdog": {"frozen_after": "-1s"}}, "watchdog.frozen_after: -1.0 is less than 0.0"),
    ({"source": {**SERIAL, "stale_after": "5s"}},
     "source.stale_after: only for [[slow_sources]] (fast channels are checked by "
     "watchdog.frozen_after)"),
    ({"slow_sources": [{"url": "modbus-tcp://127.0.0.1:502", "stale_after": "0s"}]},
     "slow_sources[0].stale_after: 0.0 is less than 0.001"),
    ({"slow_sources": [{"url": "modbus-tcp://127.0.0.1:502", "channels": ["t"],
                        "stale_after": {"temp": "5s"}}]},
     "slow_sources[0].stale_after.temp: not a channel of this source (t)"),
])
def test_sensor_fault_mistakes_are_one_line_errors_naming_the_key(tmp_path, tables, message):
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, **tables)
    assert str(e.value) == message


def test_stale_after_names_a_point_of_the_register_map(tmp_path):
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP

    src = {"url": "modbus-tcp://127.0.0.1:502", "map": str(DEFAULT_MAP),
           "stale_after": {"temprature_c": "5s"}}
    with pytest.raises(ConfigError, match=r"^slow_sources\[0\]\.stale_after\.temprature_c: not a "
                                          r"channel of this source \(temperature_c, current_a"):
        cfg(tmp_path, slow_sources=[src])
