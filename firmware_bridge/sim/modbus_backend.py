"""pymodbus underneath the test server: its datastore (``SimDevice`` / ``SimData``, built
from ``{table: size or values}``) and its own servers with one change: each device may
answer late, and an absent device may be answered for by a "gateway" with exception
0x0B. Only the per-connection request handler is subclassed; the harness that says how
each device answers is :class:`~firmware_bridge.sim.modbus_server.ModbusTestServer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_bridge.errors import ConfigError

__all__ = ["DEFAULT_SIZE", "TABLES", "DelayingHandler", "SerialServer", "TcpServer", "sim_devices"]

#: registers (or bits) served per table when a device does not say
DEFAULT_SIZE = 1024
TABLES = ("holding", "input", "coil", "discrete")


def _table_block(table: str, spec: int | Sequence) -> list[SimData]:
    bits = table in ("coil", "discrete")
    if isinstance(spec, int):
        values = [False] * spec if bits else [0] * spec
    else:
        values = [bool(v) for v in spec] if bits else [int(v) & 0xFFFF for v in spec]
    if not values or len(values) > 65536:
        raise ConfigError(f"test server table {table!r}: size {len(values)} is not in 1..65536")
    if bits:
        return [SimData(0, values=values, datatype=DataType.BITS)]
    return [SimData(0, values=values, datatype=DataType.REGISTERS)]


def sim_devices(devices: dict[int, dict[str, int | Sequence]]) -> list[SimDevice]:
    r"""pymodbus ``SimDevice``\ s from ``{device_id: {table: size or [values]}}``; tables
    left out get :data:`DEFAULT_SIZE` zeros."""
    out: list[SimDevice] = []
    for dev_id, tables in devices.items():
        bad = set(tables) - set(TABLES)
        if bad:
            raise ConfigError(
                f"test server device {dev_id}: unknown table(s) {sorted(bad)} "
                f"(expected {', '.join(TABLES)})"
            )
        # SimDevice's order: (coils, discrete inputs, holding, input registers)
        blocks = tuple(
            _table_block(t, tables.get(t, DEFAULT_SIZE))
            for t in ("coil", "discrete", "holding", "input")
        )
        out.append(SimDevice(dev_id, simdata=blocks, use_bit_addressing=True))
    return out


class DelayingHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, with per-device answer delays.

    pymodbus 3.16's handler keeps the request being served in ``self.last_pdu`` and its
    task reads it when it runs, so a request handled late (delayed) would be answered
    with another request's data or ids. Here each task is bound to its own request: it
    waits out the device's delay, puts its request in ``last_pdu``, runs the original
    handler (which does not suspend with this datastore) and puts back what was there.
    """

    def handle_later(self):
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        harness = self.server.harness
        if harness.unknown == "gateway" and not harness.serves(pdu.dev_id):
            answer = ExceptionResponse(
                pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE,
                device_id=pdu.dev_id, transaction=pdu.transaction_id,
            )
            self.server_send(answer, addr)
            return
        delay = harness.delay(pdu.dev_id)
        asyncio.run_coroutine_threadsafe(self._handle(pdu, addr, delay), self.loop)

    async def _handle(self, pdu, addr, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        saved = self.last_pdu, self.last_addr
        self.last_pdu, self.last_addr = pdu, addr
        try:
            await self.handle_request()
        finally:
            self.last_pdu, self.last_addr = saved


class _Delays:
    """Mixin: a pymodbus server whose connections use :class:`DelayingHandler`, asking
    ``harness`` (a :class:`~firmware_bridge.sim.modbus_server.ModbusTestServer`) how
    each device answers."""

    def __init__(self, harness, *args, **kwargs) -> None:
        self.harness = harness
        super().__init__(*args, **kwargs)

    def callback_new_connection(self):
        return DelayingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class TcpServer(_Delays, ModbusTcpServer):
    pass


class SerialServer(_Delays, ModbusSerialServer):
    pass
