"""ModbusSource against real servers: pymodbus's own TCP server on 127.0.0.1 port 0
(``ModbusTestServer``), and pymodbus's RTU server on a pty pair.

Timeouts and backoffs are short so the whole file runs in a few seconds; waits are on a
condition with a deadline, never a sleep.
"""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np
import pytest
from support.devices import Collector

from firmware_bridge.block import Quality
from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.codec import encode_value
from firmware_bridge.modbus.plan import plan_reads
from firmware_bridge.modbus.regmap import TYPE_WIDTH, parse_map
from firmware_bridge.sim.modbus_server import ModbusTestServer
from firmware_bridge.sources import open_source
from firmware_bridge.sources.modbus import ModbusSource


@pytest.fixture(autouse=True)
def _quiet_pymodbus():
    """pymodbus logs every timeout at ERROR with a frame dump; the tests cause many."""
    logger = logging.getLogger("pymodbus")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


def pts(*specs: tuple) -> dict:
    """``(name, device_id, table, address[, type])`` tuples → a map dict."""
    out = []
    for name, dev, table, address, *typ in specs:
        p = {"name": name, "device_id": dev, "table": table, "address": address}
        if typ:
            p["type"] = typ[0]
        out.append(p)
    return {"points": out}


def fast_source(url: str, col: Collector, regmap, **kw) -> ModbusSource:
    opts = {"rate": 50.0, "timeout_s": 0.05, "retries": 0, "backoff_s": 0.05, "backoff_max_s": 0.2}
    opts.update(kw)
    return ModbusSource(url, col.on_block, col.on_event, map=regmap, **opts)


# ------------------------------------------------------------------------ values
def test_every_type_and_byte_word_order_decodes_from_a_real_server():
    """Encode with our codec, serve with pymodbus, poll, compare (float32 channels)."""
    values = {"int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 3123456789,
              "int64": -(2**40) - 3, "float32": -3.14159, "float64": 2.718281828459045,
              "bool": 1}
    points, address = [], 0
    for typ, bo, wo in itertools.product(values, ("big", "little"), ("big", "little")):
        if typ == "bool" and (bo, wo) != ("big", "big"):
            continue
        p = {"name": f"{typ}_{bo[0]}{wo[0]}", "table": "holding", "address": address, "type": typ}
        if typ != "bool":
            p.update(byte_order=bo, word_order=wo, scale=0.5 if typ == "int32" else 1.0)
        points.append(p)
        address += TYPE_WIDTH[typ]
    points += [{"name": "coil_on", "table": "coil", "address": 3},
               {"name": "di_off", "table": "discrete", "address": 0},
               {"name": "ir_scaled", "table": "input", "address": 7, "type": "int16",
                "scale": 0.1, "offset": -40.0}]
    regmap = parse_map({"points": points})
    expected = {p.name: values.get(p.type, 0) for p in regmap.points}
    expected |= {"coil_on": 1, "di_off": 0, "ir_scaled": 21.5}
    with ModbusTestServer({1: {}}) as server:
        for p in regmap.points:
            server.set_registers(1, p.table, p.address, encode_value(p, expected[p.name]))
        col = Collector()
        src = fast_source(server.url, col, regmap)
        src.start()
        try:
            (block,) = col.wait_blocks(1)
        finally:
            src.stop()
    assert block.channels == regmap.names
    assert block.samples.dtype == np.float32 and block.samples.shape == (1, len(regmap.points))
    assert block.point_ok.all() and block.quality == Quality.GOOD
    got = dict(zip(block.channels, block.samples[0].tolist()))
    for name, want in expected.items():
        assert got[name] == pytest.approx(float(np.float32(want)), rel=1e-6), name


def test_a_poll_sends_exactly_the_planned_requests():
    """The server sees one request per planned read, nothing more (3 for 10 points)."""
    regmap = parse_map({"plan": {"max_gap": 1}, "points": [
        *({"name": f"h{i}", "table": "holding", "address": 2 * i, "type": "float32"} for i in range(6)),
        {"name": "i0", "table": "input", "address": 0}, {"name": "i1", "table": "input", "address": 2},
        {"name": "c0", "table": "coil", "address": 0}, {"name": "c5", "table": "coil", "address": 1},
    ]})
    plan = plan_reads(regmap)
    assert len(plan) == 3
    with ModbusTestServer({1: {}}) as server:
        src = fast_source(server.url, Collector(), regmap)
        try:
            for _ in range(3):
                assert src.poll_once().point_ok.all()
        finally:
            src.stop()
        seen = [(r.device_id, r.function_code, r.address, r.count) for r in server.requests]
    want = [(r.device_id, r.function_code, r.address, r.count) for r in plan]
    assert seen == want * 3


def test_a_modbus_exception_fails_only_its_points_and_says_why():
    """A read of an address the device does not have: an error event, no outage."""
    regmap = parse_map(pts(("good", 1, "holding", 0), ("beyond", 1, "input", 20)))
    with ModbusTestServer({1: {"holding": 4, "input": 10}}) as server:
        server.set_registers(1, "holding", 0, [77])
        col = Collector()
        src = fast_source(server.url, col, regmap)
        try:
            block = src.poll_once()
            src.poll_once()
        finally:
            src.stop()
    assert block.point_ok.tolist() == [True, False]
    assert block.samples[0, 0] == 77 and np.isnan(block.samples[0, 1])
    assert block.quality & Quality.PARTIAL
    assert col.kinds() == ["error"]  # once, not every poll
    assert "device 1 input 20" in col.events[0].message and "illegal data address" in col.events[0].message


# -------------------------------------------------------------- device failures
@pytest.mark.parametrize("unknown", ["silent", "gateway"])
def test_a_dead_device_never_stops_the_others(unknown):
    """Device 3 is not served: no answer at all (an RS-485 drop), or exception 0x0B from
    a TCP gateway. It goes down once and is probed with backoff, while devices 1 and 2
    keep flowing at the poll rate."""
    regmap = parse_map(pts(("a", 1, "holding", 0), ("dead", 3, "holding", 0), ("b", 2, "input", 0)))
    with ModbusTestServer({1: {"holding": [11]}, 2: {"input": [22]}}, unknown=unknown) as server:
        col = Collector()
        src = fast_source(server.url, col, regmap, rate=40.0, timeout_s=0.05, retries=1,
                          backoff_s=0.1, backoff_max_s=0.4)
        src.start()
        try:
            col.wait(lambda c: "outage" in c.kinds(3), what="outage of device 3")
            t0 = time.monotonic()
            blocks = col.wait_blocks(30)
            elapsed = time.monotonic() - t0
        finally:
            src.stop()
        probes = sum(r.device_id == 3 for r in server.requests)
    assert all(b.point_ok.tolist() == [True, False, True] for b in blocks)
    assert all(b.samples[0, 0] == 11 and b.samples[0, 2] == 22 for b in blocks)
    assert all(b.quality & Quality.PARTIAL for b in blocks)
    # 30 polls at 40/s take 0.75 s; each probe of device 3 may cost one 50 ms timeout
    assert elapsed < 2.0
    # backoff: far fewer requests to the dead device than polls (not 2 tries per poll)
    assert probes < len(col.blocks) / 2
    assert col.kinds(3) == ["outage"] and col.kinds(1) == [] and col.kinds(2) == []
    if unknown == "gateway":
        assert "exception 11 (gateway target did not respond)" in col.events[0].message


def test_a_slow_device_goes_down_and_recovers_while_others_flow():
    regmap = parse_map(pts(("fast", 1, "holding", 0), ("slow", 2, "holding", 0)))
    with ModbusTestServer({1: {"holding": [1]}, 2: {"holding": [2]}}) as server:
        col = Collector()
        src = fast_source(server.url, col, regmap)
        src.start()
        try:
            col.wait_blocks(3)
            server.set_delay(2, 0.2)  # answers after the 50 ms timeout
            col.wait(lambda c: "outage" in c.kinds(2), what="outage of device 2")
            down = col.wait_blocks(10)
            server.set_delay(2, 0.0)
            col.wait(lambda c: "recovered" in c.kinds(2), what="device 2 recovered")
            after = col.wait_blocks(3)
        finally:
            src.stop()
    assert all(b.point_ok[0] and b.samples[0, 0] == 1 for b in down)
    assert not any(b.point_ok[1] for b in down[1:])
    assert all(b.point_ok.all() and b.samples[0, 1] == 2 for b in after)
    assert col.kinds(2) == ["outage", "recovered"] and col.kinds(1) == []


def test_server_restart_on_the_same_port_gives_outage_then_recovered():
    regmap = parse_map(pts(("a", 1, "holding", 0), ("b", 2, "holding", 0)))
    with ModbusTestServer({1: {"holding": [5]}, 2: {"holding": [6]}}) as server:
        port = server.port
        col = Collector()
        src = fast_source(server.url, col, regmap)
        src.start()
        try:
            col.wait_blocks(2)
            server.stop()
            col.wait(lambda c: c.kinds().count("outage") == 2, what="outage of both devices")
            dark = col.wait_blocks(5)
            server.set_registers(1, "holding", 0, [55])  # changed while the link was down
            server.start()
            assert server.port == port
            col.wait(lambda c: c.kinds().count("recovered") == 2, what="both devices recovered")
            col.wait(lambda c: any(b.quality & Quality.RECOVERED for b in c.blocks),
                     what="a block flagged RECOVERED")
            after = col.wait_blocks(2)
        finally:
            src.stop()
    assert all(not b.point_ok.any() and np.isnan(b.samples).all() for b in dark)
    assert all(b.point_ok.all() for b in after)
    assert after[-1].samples[0].tolist() == [55.0, 6.0]
    assert col.kinds(1) == ["outage", "recovered"] and col.kinds(2) == ["outage", "recovered"]
    assert "link to 127.0.0.1" in col.events[0].message
    stats = src.stats()
    assert stats["outages"] == 2 and stats["recoveries"] == 2 and stats["devices_down"] == 0


def test_no_server_means_paced_reconnects_not_a_busy_loop():
    """Nothing listens on the port: connects are retried with a capped backoff."""
    with ModbusTestServer({1: {}}) as server:
        url = server.url
    regmap = parse_map(pts(("a", 1, "holding", 0)))
    col = Collector()
    src = fast_source(url, col, regmap, rate=100.0, backoff_s=0.05, backoff_max_s=0.1)
    cpu0 = time.process_time()
    src.start()
    try:
        blocks = col.wait_blocks(50)  # 0.5 s at 100 polls/s
    finally:
        src.stop()
    attempts = src.stats()["link_errors"]
    assert all(not b.point_ok.any() for b in blocks)
    assert col.kinds() == ["outage"]
    assert 2 <= attempts <= 12  # ~0.05, 0.1, 0.1, ... over 0.5 s; a spin would be thousands
    assert time.process_time() - cpu0 < 0.5


# ----------------------------------------------------------------------- options
def test_url_options_and_open_source(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[[points]]\nname = "a"\ntable = "holding"\naddress = 0\n')
    src = open_source(f"modbus-tcp://127.0.0.1:1502?map={path}&rate=5&timeout=100ms&retries=2",
                      lambda b: None)
    assert isinstance(src, ModbusSource)
    assert (src.rate, src.timeout_s, src.retries, src.channels) == (5.0, 0.1, 2, ("a",))
    src2 = open_source(f"modbus-tcp://127.0.0.1:1502?map={path}&rate=5", lambda b: None, rate=20.0)
    assert src2.rate == 20.0  # options override the URL
    with pytest.raises(ConfigError, match=r"unknown option rat= \(did you mean 'rate'\?\)"):
        ModbusSource(f"modbus-tcp://127.0.0.1:1502?map={path}&rat=5", lambda b: None)
    with pytest.raises(ConfigError, match=r"unknown option 'rtae' for a Modbus source \(did you mean 'rate'\?\)"):
        open_source(f"modbus-tcp://127.0.0.1:1502?map={path}", lambda b: None, rtae=3)
    with pytest.raises(ConfigError, match=r"no register map \(add \?map=pump.toml"):
        ModbusSource("modbus-tcp://127.0.0.1:1502", lambda b: None)
    with pytest.raises(ConfigError, match=r"rate=0 is not in"):
        ModbusSource(f"modbus-tcp://127.0.0.1:1502?map={path}&rate=0", lambda b: None)
    with pytest.raises(ConfigError, match=r"port 99999 is not in 1..65535"):
        ModbusSource(f"modbus-tcp://127.0.0.1:99999?map={path}", lambda b: None)
    with pytest.raises(ConfigError, match=r"parity='X' is not one of N, E, O"):
        ModbusSource(f"modbus-rtu:///dev/ttyUSB0?parity=X&map={path}", lambda b: None)


def test_stop_returns_promptly_while_a_device_is_timing_out():
    regmap = parse_map(pts(("a", 9, "holding", 0)))
    with ModbusTestServer({1: {}}) as server:
        col = Collector()
        src = fast_source(server.url, col, regmap, timeout_s=2.0)
        src.start()
        server.wait_for_requests(lambda reqs: len(reqs) >= 1)
        src.stop(timeout=5.0)
        assert not src._thread.is_alive()


# ------------------------------------------------------------------------- RTU
def test_rtu_over_a_pty_line_with_a_silent_device():
    """pymodbus's RTU server on one end of a pty null-modem line, the source on the
    other: values arrive, and an absent drop (device 3, silent as on RS-485) does not
    stop the two live ones."""
    from firmware_bridge.sim.ptylink import pty_link

    regmap = parse_map(pts(("a", 1, "holding", 0, "float32"), ("b", 2, "coil", 4),
                           ("gone", 3, "holding", 0)))
    with pty_link() as (server_end, client_end), ModbusTestServer(
        {1: {}, 2: {}}, serial_port=server_end, baudrate=115200
    ) as server:
        server.set_registers(1, "holding", 0, encode_value(regmap.point("a"), 2.5))
        server.set_coils(2, 4, [True])
        col = Collector()
        src = fast_source(f"modbus-rtu://{client_end}?baud=115200", col, regmap,
                          rate=20.0, timeout_s=0.1)
        src.start()
        try:
            col.wait(lambda c: "outage" in c.kinds(3), what="outage of device 3")
            blocks = col.wait_blocks(5)
        finally:
            src.stop()
    assert all(b.point_ok.tolist() == [True, True, False] for b in blocks)
    assert blocks[-1].samples[0, :2].tolist() == [2.5, 1.0]
    assert col.kinds(1) == [] and col.kinds(2) == []


def test_channels_option_picks_and_orders_points():
    """A gateway config may name the channels it wants: only those are read, in order."""
    regmap = parse_map(pts(("a", 1, "holding", 0), ("b", 1, "holding", 1), ("c", 2, "input", 0)))
    with ModbusTestServer({1: {"holding": [1, 2]}, 2: {"input": [3]}}) as server:
        src = open_source(server.url, lambda b: None, map=regmap, channels=("c", "a"))
        try:
            block = src.poll_once()
        finally:
            src.stop()
        seen = {(r.device_id, r.address, r.count) for r in server.requests}
    assert block.channels == ("c", "a") and block.samples[0].tolist() == [3.0, 1.0]
    assert seen == {(1, 0, 1), (2, 0, 1)}  # b is not read
    with pytest.raises(ConfigError, match=r"channel 'aa' is not a point of .* \(did you mean 'a'\?\)"):
        ModbusSource(server.url, lambda b: None, map=regmap, channels=["aa"])


def test_client_urls():
    """The URL forms users write, and the pymodbus clients they become."""
    from pymodbus.client import ModbusSerialClient, ModbusTcpClient

    from firmware_bridge.modbus.client import make_client, parse_modbus_url

    assert parse_modbus_url("modbus-tcp://plc").port == 502
    u = parse_modbus_url("modbus-tcp://[::1]:1502")
    assert (u.host, u.port) == ("::1", 1502)
    tcp = make_client("modbus-tcp://127.0.0.1:1502", 0.3)
    assert isinstance(tcp, ModbusTcpClient) and tcp.comm_params.reconnect_delay > 0
    rtu = make_client("modbus-rtu:///dev/ttyUSB1?baud=9600&parity=E&stopbits=2", 0.2)
    assert isinstance(rtu, ModbusSerialClient)
    p = rtu.comm_params
    assert (p.host, p.baudrate, p.parity, p.stopbits, p.bytesize) == ("/dev/ttyUSB1", 9600, "E", 2, 8)
    for bad, msg in [("modbus-rtu://", "no serial device"), ("modbus-tcp://h:x", "port 'x' is not a number"),
                     ("modbus-rtu:///dev/x?baud=fast", "baud='fast' is not an integer"),
                     ("modbus-udp://h", "unknown scheme 'modbus-udp'")]:
        with pytest.raises(ConfigError, match=msg):
            make_client(bad)
