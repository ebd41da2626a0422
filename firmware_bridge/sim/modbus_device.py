"""The simulated machine as a Modbus TCP device (a PLC or smart sensor on the network).

Registers follow a register map (default ``data/maps/sim_pump.toml``): every non-bit
point is refreshed at ``update_hz`` from a ``values()`` callback (slow values, vibration
RMS per axis, status, fault code) and encoded with
:func:`firmware_bridge.modbus.codec.encode_value`, into the map's table and mirrored into
the other register table (input ↔ holding) at the same addresses, for clients that can
read only one of them. The server is pymodbus's own TCP server
(:class:`firmware_bridge.modbus.testserver.ModbusTestServer`).

The stop coil (the map's bool point named ``stop``, coil 0 in the pump map) is the trip
input: a client writing 1 stops the machine, writing 0 resets it. The device checks the
coil at every refresh (so the machine reacts within ``1/update_hz`` s, like a contactor
behind a PLC scan), and sets the coil to 1 itself when the machine was stopped another
way (serial STOP, stdin), so reading the coil always tells whether the machine is stopped.

Modbus RTU: :meth:`ModbusDevice.start_rtu` serves the *same* registers as RTU on a pty.
pymodbus's serial server needs a port path to open, and so does the gateway, so two ptys
are joined back to back (:class:`PtyRelay`, what ``socat`` would do): the server opens one
slave, the gateway the other (the path printed as ``modbus-rtu: /dev/pts/N``).
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import threading
import tty
from collections.abc import Callable
from pathlib import Path

from firmware_bridge.errors import ConfigError, PortError
from firmware_bridge.modbus.codec import encode_value
from firmware_bridge.modbus.regmap import RegisterMap, load_map
from firmware_bridge.modbus.testserver import ModbusTestServer

#: the register map of the simulated pump, shipped with the repo
DEFAULT_MAP = Path(__file__).resolve().parents[2] / "data" / "maps" / "sim_pump.toml"
_MIRROR = {"input": "holding", "holding": "input"}


class ModbusDevice:
    """Serve ``values()`` on Modbus TCP at ``host:port`` (port 0 picks a free one).

    ``on_stop(stopped: bool)`` is called (from the device's thread) when a client changes
    the stop coil; ``is_stopped()`` tells the machine's state to mirror into the coil.
    """

    def __init__(
        self,
        values: Callable[[], dict[str, float]],
        on_stop: Callable[[bool], None],
        is_stopped: Callable[[], bool],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        map_path: str | Path = DEFAULT_MAP,
        update_hz: float = 10.0,
    ) -> None:
        self.map: RegisterMap = load_map(map_path)
        self.values, self.on_stop, self.is_stopped = values, on_stop, is_stopped
        self.update_hz = update_hz
        try:
            self.stop_point = self.map.point("stop")
        except (KeyError, ConfigError):
            raise ConfigError(f"{map_path}: needs a bool point named 'stop' (the trip coil)") from None
        if self.stop_point.table != "coil":
            raise ConfigError(f"{map_path}: point 'stop' must be in table 'coil', not {self.stop_point.table!r}")
        self._regs: dict[tuple[int, str], list[int]] = {}
        for p in self.map.points:
            if p.is_bit or p.type == "bool":
                continue
            key = (p.device_id, p.table)
            size = max(len(self._regs.get(key, [])), p.address + p.width)
            self._regs.setdefault(key, []).extend([0] * (size - len(self._regs.get(key, []))))
        sizes: dict[int, dict[str, int]] = {}
        for p in self.map.points:
            dev = sizes.setdefault(p.device_id, {})
            dev[p.table] = max(dev.get(p.table, 16), p.address + p.width + 1)
        for dev in sizes.values():
            size = max(dev.get("input", 16), dev.get("holding", 16))
            dev["input"] = dev["holding"] = size
        self.server = ModbusTestServer(sizes, host=host, port=port)
        self._coil = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates = 0

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> ModbusDevice:
        try:
            self.server.start()
        except OSError as exc:
            raise PortError(
                f"modbus-tcp: cannot listen on {self.server.host}:{self.server.port} "
                f"({exc.strerror}); use port 0 for a free one"
            ) from None
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="sim-modbus", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        period = 1.0 / self.update_hz
        while not self._stop.wait(period):
            try:
                self.refresh()
            except (PortError, TimeoutError, RuntimeError):
                if self._stop.is_set():
                    return
                raise

    def refresh(self) -> None:
        """Apply a changed stop coil, then write the current values into the registers."""
        sp = self.stop_point
        coil = self.server.get_coils(sp.device_id, sp.address, 1)[0]
        if coil != self._coil:
            self._coil = coil
            self.on_stop(coil)
        else:
            stopped = bool(self.is_stopped())
            if stopped != coil:
                self.server.set_coils(sp.device_id, sp.address, [stopped])
                self._coil = stopped
        vals = self.values()
        for p in self.map.points:
            if p.name in vals and not (p.is_bit or p.type == "bool"):
                regs = self._regs[(p.device_id, p.table)]
                regs[p.address : p.address + p.width] = encode_value(p, vals[p.name])
        for (dev, table), regs in self._regs.items():
            self.server.set_registers(dev, table, 0, regs)
            self.server.set_registers(dev, _MIRROR[table], 0, regs)
        self.updates += 1

    def start_rtu(self, baud: int = 19200) -> str:
        """Serve the registers as Modbus RTU on a pty too; returns the gateway's port path."""
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer

        # the test server's loop and datastore (no public accessor yet): the RTU server
        # runs on the same loop over the same SimCore, so both serve identical registers
        loop, context = self.server._loop, self.server._context
        if loop is None or context is None:
            raise PortError("modbus-rtu: start the Modbus TCP device first")
        self.relay = PtyRelay()

        async def listen() -> ModbusSerialServer:
            srv = ModbusSerialServer(
                self.server._sim_devices, framer=FramerType.RTU,
                port=self.relay.server_path, baudrate=baud,
            )
            srv.context = context
            if not await srv.listen():
                raise PortError(f"modbus-rtu: pymodbus cannot open {self.relay.server_path}")
            return srv

        self._rtu = asyncio.run_coroutine_threadsafe(listen(), loop).result(5.0)
        return self.relay.path

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        rtu = getattr(self, "_rtu", None)
        if rtu is not None and self.server._loop is not None:
            asyncio.run_coroutine_threadsafe(rtu.shutdown(), self.server._loop).result(5.0)
            self.relay.close()
        self.server.close()


class PtyRelay:
    """Two ptys joined back to back: bytes written to one slave come out of the other.

    ``server_path`` is opened by the device's server, ``path`` by the gateway.
    """

    def __init__(self) -> None:
        self._a, self._a_slave = pty.openpty()
        self._b, self._b_slave = pty.openpty()
        for fd in (self._a_slave, self._b_slave):
            tty.setraw(fd)
        self.server_path = os.ttyname(self._a_slave)
        self.path = os.ttyname(self._b_slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-pty-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        other = {self._a: self._b, self._b: self._a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(other), [], [], 0.1)
                for fd in ready:
                    os.write(other[fd], os.read(fd, 4096))
            except OSError:
                if self._stop.is_set():
                    return
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for fd in (self._a, self._b, self._a_slave, self._b_slave):
            try:
                os.close(fd)
            except OSError:
                pass
