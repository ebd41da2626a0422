"""The sensor side of ``bench_gateway``'s latency figures, and the bare floor processes.

:class:`Device` plays the sensor on several ptys at once, from one thread: every pty gets
a 256-sample frame of healthy 3-axis vibration every 10 ms (3 × 25.6 kHz, real time),
ptys staggered so that only one reader wakes at a time. ``arm()`` replaces one future
frame of one pty by a clearly faulty one; ``t0`` is ``perf_counter()`` just before its
``os.write``, ``t1`` the ``perf_counter()`` right after the ``os.read`` that brought
``STOP\\n`` back on that pty (``None`` if the trip arrives elsewhere, e.g. a Modbus
coil). Every ``STOP``/``RESET`` is acknowledged with a message frame (``ack STOP``).

Floor processes (run as ``python -m benchmarks._gw_device serial-floor PATH`` or
``modbus-floor PATH PORT``): read the pty with select + ``os.read``; on the faulty
frame's marker bytes, write ``STOP\\n`` back / call pymodbus ``write_coil`` — no decoding,
no compute. ``modbus-server``: a pymodbus TCP server that prints ``W <perf_counter>
<value>`` for every write_coil request it receives (timed as its bytes arrive).
"""

from __future__ import annotations

import os
import pty
import queue
import random
import select
import sys
import threading
import time
import tty
from dataclasses import dataclass, field

import numpy as np

from benchmarks._gw_setup import FRAME, MARKER, MARKER_BYTES, RATE, faulty_frame, raise_priority
from firmware_bridge.codec.frames import encode_frame, encode_message

PERIOD = FRAME / RATE  # 10 ms
SEARCH = MARKER_BYTES[:12]


@dataclass
class Pty:
    name: str
    offset: float  # stagger within the frame period
    master: int = -1
    slave: int = -1
    path: str = ""
    active: bool = False
    k: int = 0  # frames written
    next_t: float = 0.0
    pending: bytearray = field(default_factory=bytearray)
    rx: bytes = b""
    stops: int = 0
    unexpected_stops: int = 0
    dropped: int = 0
    partial_writes: int = 0


@dataclass
class Armed:
    pty: Pty
    k: int  # frame index to replace
    data: bytes
    want_stop: bool
    t0: float = 0.0


class Device:
    """See the module docstring. ``results`` gets ``(t0, t1 | None)`` per armed fault."""

    def __init__(self, data: np.ndarray, names_offsets: list[tuple[str, float]]) -> None:
        self.data = data
        self.n_frames = len(data) // FRAME
        self.ptys: dict[str, Pty] = {}
        for name, off in names_offsets:
            p = Pty(name, off)
            p.master, p.slave = pty.openpty()
            tty.setraw(p.slave)
            os.set_blocking(p.master, False)
            p.path = os.ttyname(p.slave)
            self.ptys[name] = p
        self.results: queue.Queue = queue.Queue()
        self._armed: Armed | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-device", daemon=True)
        self.max_late_ms = 0.0

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        self._thread.start()

    def activate(self, name: str) -> None:
        """Start streaming on ``name`` (frame 0 is the first its reader will ever see)."""
        p = self.ptys[name]
        with self._lock:
            p.k = 0
            p.next_t = time.perf_counter() + 0.002 + p.offset
            p.active = True

    def deactivate(self, name: str) -> None:
        self.ptys[name].active = False

    def frames(self, name: str) -> int:
        return self.ptys[name].k

    def arm(self, name: str, lo: int, hi: int, *, aligned: bool, want_stop: bool = True) -> int:
        """Make a frame between ``lo`` and ``hi`` frames from now faulty. ``aligned``: pick
        one that completes a gateway window (frames 3, 5, 7, ... counted from 0: window 1024,
        hop 512, frames of 256, the reader's first frame being frame 0)."""
        p = self.ptys[name]
        k = p.k + random.randint(lo, hi)
        if aligned and (k < 3 or k % 2 == 0):
            k = max(3, k + 1)
        i = k % self.n_frames
        x = faulty_frame(self.data[i * FRAME:(i + 1) * FRAME], MARKER)
        wire = encode_frame(k, int(k * PERIOD * 1e6), x)
        with self._lock:
            self._armed = Armed(p, k, wire, want_stop)
        return k

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for p in self.ptys.values():
            for fd in (p.master, p.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # ------------------------------------------------------------------- loop
    def _frame(self, p: Pty) -> bytes:
        i = p.k % self.n_frames
        return encode_frame(p.k, int(p.k * PERIOD * 1e6), self.data[i * FRAME:(i + 1) * FRAME])

    def _write(self, p: Pty, data: bytes | None) -> None:
        if data is not None:
            if len(p.pending) > 256 * 1024:  # reader gone or stuck: drop, like a UART
                p.dropped += 1
                return
            p.pending += data
        while p.pending:
            try:
                n = os.write(p.master, p.pending)
            except BlockingIOError:
                p.partial_writes += 1
                return
            except OSError:
                p.pending.clear()
                return
            del p.pending[:n]

    def _run(self) -> None:
        raise_priority()  # the same nice as the gateway and the floor processes
        fds = {p.master: p for p in self.ptys.values()}
        nxt: dict[str, bytes] = {}
        while not self._stop.is_set():
            now = time.perf_counter()
            soonest = now + 0.05
            for p in self.ptys.values():
                if not p.active:
                    continue
                if now >= p.next_t:
                    self.max_late_ms = max(self.max_late_ms, (now - p.next_t) * 1e3)
                    a = self._armed
                    if a is not None and a.pty is p and a.k == p.k:
                        a.t0 = time.perf_counter()
                        self._write(p, a.data)
                        if not a.want_stop:
                            self.results.put((a.t0, None))
                            self._armed = None
                    else:
                        self._write(p, nxt.pop(p.name, None) or self._frame(p))
                    p.k += 1
                    p.next_t += PERIOD
                    if p.next_t < now - 0.1:  # fell far behind: don't burst
                        p.next_t = now + PERIOD
                elif p.name not in nxt and self._armed is None:
                    nxt[p.name] = self._frame(p)  # encode ahead, never while a trip is due
                if p.pending:
                    self._write(p, None)
                soonest = min(soonest, p.next_t)
            wait = max(0.0, soonest - time.perf_counter())
            try:
                ready, _, _ = select.select(list(fds), [], [], wait)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                t1 = time.perf_counter()
                self._commands(fds[fd], data, t1)

    def _commands(self, p: Pty, data: bytes, t1: float) -> None:
        buf = p.rx + data
        *lines, p.rx = buf.split(b"\n")
        for line in lines:
            word = line.strip().decode("ascii", "replace").upper()
            if not word:
                continue
            if word == "STOP":
                p.stops += 1
                a = self._armed
                if a is not None and a.pty is p and a.want_stop and a.t0:
                    self._armed = None
                    self.results.put((a.t0, t1))
                else:
                    p.unexpected_stops += 1
            self._write(p, encode_message(f"ack {word}"))


# --------------------------------------------------------------------- floors
def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def _floor(fd: int, on_marker) -> None:
    """Read ``fd`` until stdin closes; call ``on_marker()`` once per faulty frame."""
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    tail, skip = b"", False
    keep = len(SEARCH) - 1
    while True:
        r, _, _ = select.select([fd, stdin], [], [], 1.0)
        if stdin in r and not os.read(stdin, 64):
            return
        if fd not in r:
            continue
        data = os.read(fd, 65536)
        if skip:  # the rest of a frame already answered: wait for its delimiter
            j = data.find(b"\x00")
            if j < 0:
                continue
            skip, data, tail = False, data[j + 1:], b""
        t_read = time.perf_counter()
        buf = tail + data
        if SEARCH in buf:
            on_marker()
            print(f"M {t_read:.9f}", flush=True)  # after the answer: off the timed path
            skip = b"\x00" not in buf[buf.find(SEARCH):]
            tail = b""
        else:
            tail = buf[-keep:]


def serial_floor(path: str) -> None:
    fd = _open_raw(path)
    _floor(fd, lambda: os.write(fd, b"STOP\n"))


def modbus_floor(path: str, port: int) -> None:
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    if not c.connect():
        raise SystemExit(f"modbus floor: cannot connect to 127.0.0.1:{port}")
    c.write_coil(1, False, device_id=1)  # warm the connection
    _floor(_open_raw(path), lambda: c.write_coil(1, True, device_id=1))


def modbus_server() -> None:
    """A pymodbus TCP server on 127.0.0.1 port 0; prints ``port N``, then one line per
    write_coil request ``W <perf_counter at arrival> <address> <0|1>``; exits when stdin
    closes."""
    import asyncio

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def trace(sending: bool, packet: bytes) -> bytes:
        if not sending and len(packet) >= 12 and packet[7] == 5:  # MBAP(7) + fc 5
            t = time.perf_counter()
            addr = int.from_bytes(packet[8:10], "big")
            print(f"W {t:.9f} {addr} {int(packet[10] == 0xFF)}", flush=True)
        return packet

    async def main() -> None:
        blocks = ([SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)])
        server = ModbusTcpServer(SimDevice(1, simdata=blocks), address=("127.0.0.1", 0),
                                 trace_packet=trace)
        await server.serve_forever(background=True)
        print(f"port {server.transport.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.shutdown()

    asyncio.run(main())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serial-floor":
        serial_floor(sys.argv[2])
    elif cmd == "modbus-floor":
        modbus_floor(sys.argv[2], int(sys.argv[3]))
    elif cmd == "modbus-server":
        modbus_server()
    else:
        raise SystemExit(f"unknown command {cmd!r}")
