"""The simulated machine as a Modbus TCP device (a PLC or smart sensor on the network).

Registers follow a register map (default :data:`DEFAULT_MAP`, ``maps/sim_pump.toml``
beside this module, package data read with :mod:`importlib.resources`): every non-bit
point is refreshed at ``update_hz`` from a ``values()`` callback (slow values, vibration
RMS per axis, status, fault code) and encoded with
:func:`firmware_bridge.modbus.codec.encode_value`, into the map's table and mirrored into
the other register table (input ↔ holding) at the same addresses, for clients that can
read only one of them. The server is pymodbus's own TCP server
(:class:`firmware_bridge.sim.modbus_server.ModbusTestServer`).

The stop coil (the map's bool point named ``stop``, coil 0 in the pump map) is the trip
input: a client writing 1 stops the machine, writing 0 resets it. The device checks the
coil at every refresh (so the machine reacts within ``1/update_hz`` s, like a contactor
behind a PLC scan), and sets the coil to 1 itself when the machine was stopped another
way (serial STOP, stdin), so reading the coil always tells whether the machine is stopped.

Life signs: a gateway's heartbeat is a write that changes coil :data:`HEARTBEAT_COIL`
(toggled) or holding register :data:`HEARTBEAT_REGISTER` (incremented) of the stop
point's device; the device notices a change at its next refresh and calls
``on_heartbeat``. While ``frozen()`` is true the registers keep the values they had (the
same reply replayed, as from a device whose measuring task hung); the stop coil still
works.

Modbus RTU: :meth:`ModbusDevice.start_rtu` serves the same registers as RTU on a pty.
pymodbus's serial server needs a port path to open, and so does the gateway, so two ptys
are joined like a null-modem cable (:func:`firmware_bridge.sim.ptylink.pty_link`):
the RTU server opens one end, the gateway the other (printed as ``modbus-rtu: /dev/pts/N``).
Both servers get the same values at every refresh; a stop-coil write on either one counts.
"""

from __future__ import annotations

import contextlib
import threading
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from firmware_bridge.errors import ConfigError, PortError
from firmware_bridge.modbus.codec import encode_value
from firmware_bridge.modbus.regmap import RegisterMap, load_map, parse_map
from firmware_bridge.sim.modbus_server import ModbusTestServer
from firmware_bridge.sim.ptylink import pty_link

#: the register map of the simulated pump, package data (a path in a checkout or an
#: installed wheel; :func:`device_map` reads it without needing one)
DEFAULT_MAP = resources.files("firmware_bridge.sim") / "maps" / "sim_pump.toml"
_MIRROR = {"input": "holding", "holding": "input"}
#: the gateway's heartbeat: a coil it toggles, or a holding register it increments
HEARTBEAT_COIL = 1
HEARTBEAT_REGISTER = 100


def device_map(path: str | Path | None = None) -> RegisterMap:
    """The register map at ``path``, or the simulated pump's own (:data:`DEFAULT_MAP`)."""
    if path is not None:
        return load_map(path)
    return parse_map(tomllib.loads(DEFAULT_MAP.read_text(encoding="utf-8")), source=str(DEFAULT_MAP))


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
        map_path: str | Path | None = None,
        update_hz: float = 10.0,
    ) -> None:
        self.map: RegisterMap = device_map(map_path)
        self.values, self.on_stop, self.is_stopped = values, on_stop, is_stopped
        self.update_hz = update_hz
        try:
            self.stop_point = self.map.point("stop")
        except (KeyError, ConfigError):
            raise ConfigError(f"{self.map.source}: needs a bool point named 'stop' (the trip coil)") from None
        if self.stop_point.table != "coil":
            raise ConfigError(f"{self.map.source}: point 'stop' must be in table 'coil', not {self.stop_point.table!r}")
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
        hb = sizes.setdefault(self.stop_point.device_id, {})
        hb["coil"] = max(hb.get("coil", 16), HEARTBEAT_COIL + 1)
        hb["holding"] = max(hb.get("holding", 16), HEARTBEAT_REGISTER + 1)
        for dev in sizes.values():
            size = max(dev.get("input", 16), dev.get("holding", 16))
            dev["input"] = dev["holding"] = size
        self._sizes = sizes
        self.server = ModbusTestServer(sizes, host=host, port=port)
        self.servers: list[ModbusTestServer] = [self.server]
        self._links = contextlib.ExitStack()
        self._coil = False
        #: called with "modbus coil" / "modbus register" when the heartbeat changed
        self.on_heartbeat: Callable[[str], None] = lambda via: None
        #: while true, the registers keep their values (see the module docstring)
        self.frozen: Callable[[], bool] = lambda: False
        self._hb_seen: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates = 0

    @property
    def port(self) -> int:
        return self.server.port

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
        coils = [srv.get_coils(sp.device_id, sp.address, 1)[0] for srv in self.servers]
        changed = [c for c in coils if c != self._coil]
        if changed:
            self._coil = changed[0]
            self.on_stop(self._coil)
        else:
            self._coil = bool(self.is_stopped())
        self._check_heartbeat()
        if self.frozen():
            for srv, coil in zip(self.servers, coils):
                if coil != self._coil:
                    srv.set_coils(sp.device_id, sp.address, [self._coil])
            self.updates += 1
            return
        vals = self.values()
        for p in self.map.points:
            if p.name in vals and not (p.is_bit or p.type == "bool"):
                regs = self._regs[(p.device_id, p.table)]
                regs[p.address : p.address + p.width] = encode_value(p, vals[p.name])
        for srv, coil in zip(self.servers, coils):
            if coil != self._coil:
                srv.set_coils(sp.device_id, sp.address, [self._coil])
            for (dev, table), regs in self._regs.items():
                srv.set_registers(dev, table, 0, regs)
                srv.set_registers(dev, _MIRROR[table], 0, regs)
        self.updates += 1

    def _check_heartbeat(self) -> None:
        dev = self.stop_point.device_id
        seen = tuple((srv.get_coils(dev, HEARTBEAT_COIL, 1)[0],
                      srv.get_registers(dev, "holding", HEARTBEAT_REGISTER, 1)[0])
                     for srv in self.servers)
        before, self._hb_seen = self._hb_seen, seen
        if before is None or seen == before:
            return
        for (c0, r0), (c1, r1) in zip(before, seen):
            if c0 != c1:
                self.on_heartbeat("modbus coil")
            if r0 != r1:
                self.on_heartbeat("modbus register")

    def start_rtu(self, baud: int = 19200) -> str:
        """Serve the registers as Modbus RTU on a pty too; returns the gateway's end.

        Call before :meth:`start` (the refresh thread then updates both servers).
        """
        server_end, client_end = self._links.enter_context(pty_link())
        rtu = ModbusTestServer(self._sizes, serial_port=server_end, baudrate=baud)
        self.servers.append(rtu)
        self.rtu_path = client_end
        return client_end

    def start(self) -> ModbusDevice:
        try:
            for srv in self.servers:
                srv.start()
        except OSError as exc:
            raise PortError(
                f"modbus-tcp: cannot listen on {self.server.host}:{self.server.port} "
                f"({exc.strerror}); use port 0 for a free one"
            ) from None
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="sim-modbus", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        for srv in self.servers:
            srv.close()
        self._links.close()
