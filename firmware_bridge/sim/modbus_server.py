"""A real pymodbus TCP server on 127.0.0.1 in a background thread, for tests and the simulator.

It runs pymodbus's own server (``ModbusTcpServer`` over ``SimDevice``/``SimData``, the
datastore pymodbus 3.16 recommends), so clients talk to the same code a user's bench
server would run; only the per-connection handler is subclassed, to delay answers
(:mod:`firmware_bridge.sim.modbus_backend`). The helper adds what tests need around it:

- port 0 by default; :attr:`ModbusTestServer.port` tells the bound port, and
  :meth:`~ModbusTestServer.start` after :meth:`~ModbusTestServer.stop` listens again on
  the *same* port with the same register contents (for reconnection tests);
- :meth:`~ModbusTestServer.set_registers` / :meth:`~ModbusTestServer.get_registers` /
  :meth:`~ModbusTestServer.get_coils` read and write the tables from the test thread,
  atomically with respect to requests (the update runs on the server's event loop);
- :meth:`~ModbusTestServer.set_offline` makes one device id stop answering (a dead
  drop on an RS-485 line behind a gateway); ids that are not served never answer either
  (``unknown="silent"``, the default, as on an RS-485 line) or get exception 0x0B
  "gateway target device failed to respond" (``unknown="gateway"``, as from a TCP gateway);
- :meth:`~ModbusTestServer.set_delay` makes one device answer late (a slow device);
- :attr:`~ModbusTestServer.requests` logs every request seen
  (``Request(device_id, function_code, address, count)``) and
  :meth:`~ModbusTestServer.wait_for_requests` waits on them with a deadline.

- ``serial_port=`` runs the RTU server on a tty instead;
  :func:`firmware_bridge.sim.ptylink.pty_link` gives two ttys joined like a null-modem
  cable, so RTU runs end to end without hardware.

Tables are ``holding``, ``input``, ``coil`` and ``discrete``, each a block from address 0.
A device is given as ``{table: size}`` or ``{table: [initial values]}``; tables left out
get :data:`~firmware_bridge.sim.modbus_backend.DEFAULT_SIZE` zeros.

>>> from firmware_bridge.modbus.client import make_client
>>> with ModbusTestServer({1: {"holding": [7, 8, 9]}}) as server:
...     client = make_client(f"modbus-tcp://127.0.0.1:{server.port}", 1.0)
...     server.set_registers(1, "holding", 1, [42])
...     client.read_holding_registers(0, count=3, device_id=1).registers
...     _ = client.write_coil(3, True, device_id=1)
...     server.get_coils(1, 0, 5)
...     client.close()
[7, 42, 9]
[False, False, False, True, False]
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from firmware_bridge.errors import ConfigError, PortError
from firmware_bridge.sim.modbus_backend import TABLES, SerialServer, TcpServer, sim_devices

#: function code used to reach each table's datastore block
_SET_FC = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}
_GET_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class Request:
    """One request the server received."""

    device_id: int
    function_code: int
    address: int
    count: int


class ModbusTestServer:
    """pymodbus's TCP server on ``host:port`` (default 127.0.0.1, port 0) in a thread,
    or its RTU server on the tty ``serial_port`` (e.g. one end of
    :func:`~firmware_bridge.sim.ptylink.pty_link`).

    Use as a context manager, or call :meth:`start` / :meth:`close`. :meth:`stop`
    closes the listener and every client connection (or the serial port) but keeps the
    thread, the port number and the register contents, so :meth:`start` brings the same
    server back.
    """

    def __init__(
        self,
        devices: dict[int, dict[str, int | Sequence]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str | None = None,
        baudrate: int = 19200,
        unknown: str = "silent",
    ) -> None:
        if unknown not in ("silent", "gateway"):
            raise ConfigError(f"unknown={unknown!r}: expected 'silent' or 'gateway'")
        devices = {1: {}} if devices is None else devices
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.unknown = unknown
        self._sim_devices = sim_devices(devices)
        self._device_ids = frozenset(devices)
        self._offline: set[int] = set()
        self._delay: dict[int, float] = {}
        self._requests: list[Request] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._context = None  # the SimCore, kept across stop/start

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> ModbusTestServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``modbus-tcp://host:port`` of the running TCP server.

        For a serial server, clients open the *other* end of the line, e.g.
        ``modbus-rtu://{client_end}?baud=19200``.
        """
        if self.serial_port is not None:
            raise ConfigError("a serial test server has no client URL: use the other end of the line")
        return f"modbus-tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> ModbusTestServer:
        """Listen (again) on ``host:port``; after the first start the port is fixed."""
        if self._server is not None:
            return self
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="modbus-test-server", daemon=True
            )
            self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener and all connections (clients see the link drop)."""
        if self._server is not None and self._loop is not None:
            self._call(self._shutdown())

    def close(self) -> None:
        """Stop and end the server thread."""
        self.stop()
        if self._loop is not None and self._thread is not None:
            self._call(self._cancel_pending())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            self._loop.close()
        self._loop = self._thread = None

    async def _listen(self) -> None:
        if self.serial_port is not None:
            server = SerialServer(
                self, self._sim_devices, port=self.serial_port,
                baudrate=self.baudrate, trace_pdu=self._trace_pdu,
            )
        else:
            server = TcpServer(
                self, self._sim_devices, address=(self.host, self.port),
                trace_pdu=self._trace_pdu,
            )
        if self._context is None:
            self._context = server.context
        else:
            server.context = self._context
        if not await server.listen():
            where = self.serial_port or f"{self.host}:{self.port}"
            raise PortError(
                f"test server: cannot listen on {where} (in use? use port=0 for a free port)"
            )
        if self.serial_port is None:
            self.port = server.transport.sockets[0].getsockname()[1]
        self._server = server

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    @staticmethod
    async def _cancel_pending() -> None:
        """Cancel requests still in flight (e.g. delayed answers) before the loop ends."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, coro, timeout: float = 5.0):
        """Run ``coro`` on the server's loop and return its result."""
        if self._loop is None:
            coro.close()
            raise PortError("test server is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------ behaviour hooks
    def _trace_pdu(self, sending: bool, pdu):
        """Log requests; return None to drop a request (the device stays silent)."""
        if sending:
            return pdu
        dev_id = pdu.dev_id
        req = Request(dev_id, pdu.function_code, getattr(pdu, "address", 0), getattr(pdu, "count", 0))
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        if dev_id in self._offline:
            return None
        if dev_id not in self._device_ids and self.unknown == "silent":
            return None
        return pdu

    def set_offline(self, device_id: int, offline: bool = True) -> None:
        """Make ``device_id`` ignore every request (clients time out), or answer again."""
        if offline:
            self._offline.add(device_id)
        else:
            self._offline.discard(device_id)

    def set_delay(self, device_id: int, seconds: float) -> None:
        """Make ``device_id`` answer ``seconds`` late (0 = at once)."""
        self._delay[device_id] = float(seconds)

    def delay(self, device_id: int) -> float:
        """How late ``device_id`` answers (seconds)."""
        return self._delay.get(device_id, 0.0)

    def serves(self, device_id: int) -> bool:
        """Whether ``device_id`` is one of the devices this server holds."""
        return device_id in self._device_ids

    # ------------------------------------------------------------------ requests
    @property
    def requests(self) -> list[Request]:
        """Every request received so far (a copy)."""
        with self._cond:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    def wait_for_requests(
        self, predicate: Callable[[list[Request]], bool], timeout: float = 5.0
    ) -> bool:
        """Wait until ``predicate(requests)`` holds; False if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -------------------------------------------------------------------- values
    def _runtime(self, device_id: int, table: str):
        if table not in TABLES:
            raise ConfigError(f"table {table!r}: expected one of {', '.join(TABLES)}")
        if device_id not in self._device_ids:
            raise ConfigError(f"device {device_id} is not served (have {sorted(self._device_ids)})")
        if self._context is None:
            raise PortError("test server is not started")
        return self._context.devices[device_id]

    def set_registers(
        self, device_id: int, table: str, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        """Write raw values (16-bit registers, or bools for coil/discrete) at ``address``."""
        runtime = self._runtime(device_id, table)
        vals = [bool(v) for v in values] if table in ("coil", "discrete") else [int(v) & 0xFFFF for v in values]

        async def write():
            return await runtime.async_setValues(_SET_FC[table], address, vals)

        if (err := self._call(write())) is not None:
            raise ConfigError(f"set_registers({device_id}, {table!r}, {address}): {err!r}")

    def get_registers(self, device_id: int, table: str, address: int, count: int = 1) -> list:
        """Read raw values from ``table``."""
        runtime = self._runtime(device_id, table)

        async def read():
            return await runtime.async_getValues(_GET_FC[table], address, count)

        result = self._call(read())
        if not isinstance(result, list):
            raise ConfigError(f"get_registers({device_id}, {table!r}, {address}, {count}): {result!r}")
        return [bool(v) for v in result] if table in ("coil", "discrete") else list(result)

    def get_coils(self, device_id: int, address: int, count: int = 1, table: str = "coil") -> list[bool]:
        """Read ``count`` coils (or discrete inputs) as bools."""
        return self.get_registers(device_id, table, address, count)

    def set_coils(self, device_id: int, address: int, values: Sequence[bool], table: str = "coil") -> None:
        self.set_registers(device_id, table, address, values)
