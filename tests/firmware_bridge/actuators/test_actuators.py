"""Trip actuators against real peers: a pymodbus TCP server on 127.0.0.1 port 0, a real
pty with a device thread, real subprocesses. Waits use deadlines, never sleeps."""

from __future__ import annotations

import asyncio
import logging
import select
import sys
import threading
import time

import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from support.devices import Responder
from support.faultproxy import FaultProxy
from support.waiting import wait_until

from firmware_bridge.actuators import (
    ActionResult,
    ActuatorSpec,
    open_actuator,
    reset_all,
    trip_all,
)
from firmware_bridge.errors import ConfigError, PortError, TripError
from firmware_bridge.sim.modbus_server import ModbusTestServer

PY = sys.executable


def coil_spec(url: str, **kw) -> ActuatorSpec:
    d = {"kind": "modbus-coil", "url": url, "timeout": 0.3, "retry_pause": 0.005, **kw}
    return ActuatorSpec.from_dict(d, key="trip[0]")


@pytest.fixture
def server():
    with ModbusTestServer({1: {"coil": 16, "holding": 32}}) as s:
        yield s


# --------------------------------------------------------------------- config
def test_kind_typo_names_key_path_and_choices():
    with pytest.raises(ConfigError) as e:
        ActuatorSpec.from_dict({"kind": "modbus-coill", "url": "modbus-tcp://h:502"}, key="trip[0]")
    assert str(e.value) == (
        "trip[0].kind: 'modbus-coill' is not one of "
        "modbus-coil, modbus-register, serial-command, command"
    )


@pytest.mark.parametrize(
    ("d", "msg"),
    [
        ({"kind": "modbus-coil", "url": "modbus-tcp://h:502", "address": 70000},
         "trip[2].address: 70000 is not in 0..65535"),
        ({"kind": "modbus-coil", "url": "modbus-tcp://h:502", "adress": 1},
         "trip[2].adress: unknown key"),
        ({"kind": "modbus-coil", "url": "serial:///dev/ttyUSB0"},
         "trip[2].url: scheme 'serial' does not fit kind 'modbus-coil'"),
        ({"kind": "modbus-coil", "url": "modbus-tcp://h:99999"}, "trip[2].url: "),
        ({"kind": "modbus-coil", "url": "modbus-tcp://h", "trip_value": 2},
         "trip[2].trip_value: 2 is not 0 or 1"),
        ({"kind": "modbus-register", "url": "modbus-tcp://h", "trip_value": 70000},
         "trip[2].trip_value: 70000 (raw 70000) does not fit uint16"),
        ({"kind": "modbus-register", "url": "modbus-tcp://h", "type": "int8"},
         "trip[2].type: 'int8' is not one of int16"),
        ({"kind": "command"}, "trip[2].argv: missing"),
        ({"kind": "command", "argv": "relayctl off"}, "trip[2].argv: 'relayctl off' is a string"),
        ({"kind": "command", "argv": ["x"], "timeout": "soon"}, "trip[2].timeout: 'soon' is not a duration"),
        ({"kind": "command", "argv": ["x"], "retries": -1}, "trip[2].retries: -1 is not in 0..20"),
        ({"kind": "command", "argv": ["x"], "verify": "yes"}, "trip[2].verify: 'yes' is not true or false"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(d, msg):
    with pytest.raises(ConfigError) as e:
        ActuatorSpec.from_dict(d, key="trip[2]")
    assert str(e.value).startswith(msg)
    assert "\n" not in str(e.value)


def test_defaults_match_the_contract():
    s = ActuatorSpec.from_dict({"kind": "modbus-coil", "url": "modbus-tcp://127.0.0.1:5020"})
    assert (s.device_id, s.address, s.trip_value, s.reset_value, s.timeout_s, s.retries, s.verify) == (
        1, 0, 1, 0, 0.5, 2, True)
    assert s.label == "trip[0]"


# --------------------------------------------------------------------- modbus
def test_coil_trip_writes_and_reads_back_then_reset(server):
    act = open_actuator(coil_spec(server.url, address=3))
    try:
        r = act.trip("bearing fault")
        assert isinstance(r, ActionResult) and r.ok and r.attempts == 1
        assert 0 < r.latency_s < 0.3
        assert "read back" in r.detail
        assert server.get_coils(1, 3) == [True]
        # the actuator read the coil back after writing it
        fcs = [q.function_code for q in server.requests if q.address == 3]
        assert fcs[-2:] == [5, 1]
        r = act.reset()
        assert r.ok and server.get_coils(1, 3) == [False]
    finally:
        act.close()


def test_server_gone_retries_then_trip_error(server, caplog):
    act = open_actuator(coil_spec(server.url, retries=2))
    server.stop()
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.actuators"):
        with pytest.raises(TripError) as e:
            act.trip("overheat")
    act.close()
    msg = str(e.value)
    assert "trip[0]" in msg and "3 attempts" in msg
    assert all(f"attempt {i}:" in msg for i in (1, 2, 3))
    assert e.value.result.attempts == 3 and not e.value.result.ok
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "firmware_bridge.actuators"]
    assert len(errors) == 1 and "FAILED" in errors[0].getMessage()


def test_silent_device_times_out_each_attempt(server):
    act = open_actuator(coil_spec(server.url, timeout=0.1, retries=1))
    server.set_offline(1)
    try:
        with pytest.raises(TripError) as e:
            act.trip()
        assert e.value.result.attempts == 2
        assert e.value.result.latency_s >= 0.2  # both attempts waited their timeout
        server.set_offline(1, False)
        assert act.trip().ok  # the actuator reconnected; the stale answers were not taken
    finally:
        act.close()


def test_connection_dropped_while_idle_trips_on_first_attempt(server):
    proxy = FaultProxy(server.port)  # cut() closes the idle connection, as a PLC or NAT does
    act = open_actuator(coil_spec(f"modbus-tcp://127.0.0.1:{proxy.port}", address=1))
    try:
        assert proxy.wait_connections(1)
        assert proxy.cut() == 2
        # wait (deadline) until the FIN has reached our idle socket
        assert select.select([act.client.socket], [], [], 5)[0]
        r = act.trip()
        assert r.ok and r.attempts == 1  # reconnected before writing, no attempt lost
        assert act.reconnects == 1
        assert server.get_coils(1, 1) == [True]
    finally:
        act.close()
        proxy.close()


def test_unreachable_at_open_is_port_error(server):
    url = server.url
    server.stop()
    with pytest.raises(PortError, match=r"trip\[0\]\.url: cannot connect"):
        open_actuator(coil_spec(url))
    act = open_actuator(coil_spec(url), connect=False)  # deferred: first action connects
    server.start()
    try:
        assert act.trip().ok
    finally:
        act.close()


def test_exception_response_is_a_failure(server):
    act = open_actuator(coil_spec(server.url, address=500, retries=0))  # server has 16 coils
    try:
        with pytest.raises(TripError, match="illegal data address"):
            act.trip()
    finally:
        act.close()


def test_register_trip_with_float_value(server):
    spec = ActuatorSpec.from_dict({"kind": "modbus-register", "url": server.url, "address": 10,
                                   "trip_value": 2.5, "reset_value": 0, "timeout": 0.3})
    act = open_actuator(spec)
    try:
        assert act.trip().ok
        assert server.get_registers(1, "holding", 10, 2) == [0x4020, 0x0000]  # float32 2.5
        assert act.reset().ok
        assert server.get_registers(1, "holding", 10, 2) == [0, 0]
    finally:
        act.close()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"trip_value": 70000, "type": "int32"}, [0x0001, 0x1170]),
        ({"trip_value": 1.0, "word_order": "little"}, [0x0000, 0x3F80]),  # CDAB
        ({"trip_value": -2}, [0xFFFE]),
    ],
)
def test_register_types_and_orders(server, extra, words):
    spec = ActuatorSpec.from_dict({"kind": "modbus-register", "url": server.url, "address": 20,
                                   **extra})
    act = open_actuator(spec)
    try:
        assert act.trip().ok
        assert server.get_registers(1, "holding", 20, len(words)) == words
    finally:
        act.close()


def test_register_trip_with_int_value(server):
    spec = ActuatorSpec.from_dict({"kind": "modbus-register", "url": server.url, "address": 4,
                                   "trip_value": 0x0BAD})
    act = open_actuator(spec)
    try:
        assert act.trip().ok
        assert server.get_registers(1, "holding", 4, 1) == [0x0BAD]
    finally:
        act.close()


class PymodbusServer:
    """pymodbus's own TCP server in a thread, for what the shared test server does not do:
    ``sticky=False`` acknowledges writes without storing them (a device in local/manual
    mode: read-back must catch it); ``framer=FramerType.RTU`` speaks RTU frames over TCP
    (pyserial's ``socket://`` URL makes that a serial line for the RTU client)."""

    def __init__(self, *, sticky: bool = True, framer: FramerType = FramerType.SOCKET) -> None:
        self.port = 0
        self.sticky, self.framer = sticky, framer
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _ignore_writes(self, fc, start, address, count, registers, values):
        if values is not None and not self.sticky:
            values[:] = [False] * len(values) if fc in (5, 15) else [0] * len(values)
        return None

    async def _main(self) -> None:
        blocks = ([SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)])
        device = SimDevice(1, simdata=blocks, action=self._ignore_writes)
        self.server = ModbusTcpServer(device, address=("127.0.0.1", 0), framer=self.framer)
        self.loop = asyncio.get_running_loop()
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        self._ready.set()
        await self.server.serving

    def __enter__(self) -> PymodbusServer:
        self._thread.start()
        assert self._ready.wait(5), "server did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self._thread.join(5)


def test_read_back_mismatch_is_retried_then_fails():
    with PymodbusServer(sticky=False) as srv:
        act = open_actuator(coil_spec(f"modbus-tcp://127.0.0.1:{srv.port}", retries=1))
        try:
            with pytest.raises(TripError, match="read-back mismatch: coil 0 reads 0 after writing 1") as e:
                act.trip()
            assert e.value.result.attempts == 2
        finally:
            act.close()
        # without verification the same device "succeeds": that is what verify is for
        act = open_actuator(coil_spec(f"modbus-tcp://127.0.0.1:{srv.port}", verify=False))
        try:
            assert act.trip().detail.endswith("(not verified)")
        finally:
            act.close()


def test_rtu_coil_trip_over_a_serial_line():
    """modbus-rtu: RTU frames over pyserial's socket:// line to pymodbus's RTU framer."""
    with PymodbusServer(framer=FramerType.RTU) as srv:
        act = open_actuator(coil_spec(f"modbus-rtu://socket://127.0.0.1:{srv.port}?baud=115200",
                                      address=4))
        try:
            r = act.trip()
            assert r.ok and r.attempts == 1 and "read back" in r.detail
            assert act.reset().ok
        finally:
            act.close()


# -------------------------------------------------------------------- command
def cmd_spec(argv, **kw) -> ActuatorSpec:
    return ActuatorSpec.from_dict({"kind": "command", "argv": argv, "retry_pause": 0.005, **kw},
                                  key="trip[1]")


def test_command_success_captures_output_and_reason():
    code = "import os; print('relay off', os.environ['SENSORML_TRIP_REASON'])"
    act = open_actuator(cmd_spec([PY, "-c", code], timeout=10))
    r = act.trip("temperature_c above 90")
    assert r.ok and r.attempts == 1
    assert "exited 0" in r.detail and "relay off temperature_c above 90" in r.detail


def test_command_nonzero_exit_is_trip_error_with_output():
    act = open_actuator(cmd_spec([PY, "-c", "import sys; print('relay busy'); sys.exit(3)"],
                                 timeout=10, retries=1))
    with pytest.raises(TripError) as e:
        act.trip()
    assert "exited with status 3" in str(e.value) and "relay busy" in str(e.value)
    assert e.value.result.attempts == 2


def test_command_timeout_kills_it_and_is_trip_error():
    act = open_actuator(cmd_spec([PY, "-c", "import threading; threading.Event().wait()"], timeout=0.3, retries=0))
    t0 = time.monotonic()
    with pytest.raises(TripError, match="did not finish within 300 ms"):
        act.trip()
    assert time.monotonic() - t0 < 5  # killed, not waited for


def test_command_missing_executable_is_config_error_at_open():
    with pytest.raises(ConfigError) as e:
        open_actuator(cmd_spec(["stopit-not-installed"]))
    assert str(e.value) == "trip[1].argv[0]: 'stopit-not-installed' not found on PATH"


def test_command_reset_runs_reset_argv_or_nothing():
    act = open_actuator(cmd_spec([PY, "-c", "pass"], reset_argv=[PY, "-c", "print('on')"], timeout=10))
    assert "on" in act.reset().detail
    act = open_actuator(cmd_spec([PY, "-c", "pass"], timeout=10))
    r = act.reset()
    assert r.ok and "nothing to run" in r.detail


# --------------------------------------------------------------------- serial
def device(ack: bool = True, frames: bool = False) -> Responder:
    """The device end of a real pty: records commands and acks them (``frames``: as a
    message frame; else a data line and a stale ack for something else first, so only
    the real ack may count), or stays silent (``ack=False``)."""
    def reply(cmd: str) -> bytes:
        if not ack:
            return b""
        if frames:
            from firmware_bridge.codec.frames import encode_message

            return encode_message(f"ack {cmd}")
        return b"0.1,0.2,0.3\n#ack RESETX\n" + f"#ack {cmd}\n".encode()

    return Responder(reply)


def serial_spec(path: str, fmt: str | None = "csv", **kw) -> ActuatorSpec:
    url = f"serial://{path}" + (f"?format={fmt}" if fmt else "")
    return ActuatorSpec.from_dict({"kind": "serial-command", "url": url,
                                   "timeout": 0.5, "retry_pause": 0.005, **kw}, key="trip[2]")


def test_serial_stop_acked_over_pty():
    with device() as dev:
        act = open_actuator(serial_spec(dev.path))
        try:
            r = act.trip("looseness")
            assert r.ok and r.attempts == 1 and "STOP acked" in r.detail
            assert act.reset().ok
            assert dev.wait_commands(2) == ["STOP", "RESET"]
        finally:
            act.close()


@pytest.mark.parametrize(("frames", "fmt"), [(True, "frames"), (True, None), (False, None)])
def test_serial_ack_by_format_over_pty(frames, fmt):
    """format=frames decodes message frames; without format, either ack counts."""
    pytest.importorskip("firmware_bridge.codec.frames")
    with device(frames=frames) as dev:
        act = open_actuator(serial_spec(dev.path, fmt))
        try:
            assert act.trip().ok
        finally:
            act.close()


def test_serial_command_through_the_running_serial_source():
    """The gateway passes its SerialSource: the command shares the source's port."""
    serial_source = pytest.importorskip("firmware_bridge.sources.serial")
    with device() as dev:
        src = serial_source.SerialSource(f"serial://{dev.path}?format=csv", lambda b: None)
        src.start()
        try:
            wait_until(lambda: src.is_open, 5, "the source to open its port", every=0.005)
            act = open_actuator(serial_spec(dev.path), serial_link=src)
            r = act.trip("imbalance")
            assert r.ok and r.attempts == 1 and "STOP acked" in r.detail
            assert dev.wait_commands(1) == ["STOP"]
            with device() as other:  # a link for another port is not used for this one
                act2 = open_actuator(serial_spec(other.path), serial_link=src)
                try:
                    assert act2.trip().ok and other.wait_commands(1) == ["STOP"]
                    assert dev.commands == ["STOP"]
                finally:
                    act2.close()
            src.stop()
            with pytest.raises(TripError, match="port is down"):  # loud when the source is gone
                act.trip()
        finally:
            src.stop()


def test_serial_no_ack_times_out_and_raises():
    with device(ack=False) as dev:
        act = open_actuator(serial_spec(dev.path, timeout=0.1, retries=1))
        try:
            with pytest.raises(TripError, match=r"no '#ack STOP' from .* within 100 ms") as e:
                act.trip()
            assert e.value.result.attempts == 2
            assert dev.wait_commands(2) == ["STOP", "STOP"]  # the device got both attempts
        finally:
            act.close()


def test_serial_missing_port_is_port_error():
    with pytest.raises(PortError, match=r"trip\[2\]\.url: cannot open /nonexistent/tty"):
        open_actuator(serial_spec("/nonexistent/tty"))


# ------------------------------------------------------------------- trip_all
def test_trip_all_tries_every_actuator_and_lists_failures(server):
    good = open_actuator(coil_spec(server.url, address=2))
    bad = open_actuator(cmd_spec([PY, "-c", "import sys; sys.exit(7)"], timeout=10, retries=0))
    try:
        with pytest.raises(TripError) as e:
            trip_all([bad, good], "spikes")
        assert "1 of 2" in str(e.value) and "trip[1]" in str(e.value) and "status 7" in str(e.value)
        assert server.get_coils(1, 2) == [True]  # the failure did not stop the coil trip
        ok = [r.ok for r in e.value.results]
        assert ok == [False, True]
        results = trip_all([good], "again")
        assert len(results) == 1 and results[0].ok
        assert reset_all([good])[0].ok and server.get_coils(1, 2) == [False]
    finally:
        good.close()
        bad.close()
