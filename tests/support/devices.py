"""Devices the tests play on real pseudo-terminals, and a collector of what a source emits.

- :class:`PtyDevice`: the device end of a ``pty.openpty()`` pair; the gateway opens its
  ``path`` (the slave, or a symlink to it that can vanish and come back, as a USB adapter
  does). Writes never block forever: a write nobody reads is an error or a torn piece.
- :class:`Responder`: a device thread on a pty that reads command lines (``STOP``,
  ``RESET``), records them and answers each as the test says (an ack, a stale ack, none).
- :class:`FrameSensor`: a sensor streaming binary frames of the simulated pump at its
  real rate from a pacing thread; garbage between frames on demand; acks ``STOP``.
- :class:`Collector`: the ``on_block``/``on_event`` callbacks of a source, with waits on
  a condition and a deadline.

Every wait here has a deadline; none sleeps to let something happen.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

import numpy as np

from support.waiting import Signal

__all__ = ["Collector", "FrameSensor", "PtyDevice", "Responder"]


class PtyDevice:
    """The device end of a real pseudo-terminal from ``pty.openpty()``.

    ``path`` is what the gateway opens (like ``/dev/ttyUSB0``): the slave's name, or
    ``link``, a symlink to it. The slave is put in raw mode at once so nothing is echoed
    or translated before pyserial opens it, and both ends stay open until :meth:`close`
    (the master never sees EOF). :meth:`vanish` closes the pty and removes the link (a USB
    adapter unplugged); :meth:`come_back` opens a new pty behind the same link.

    Writers hold :attr:`lock` for a whole message so two threads never interleave bytes.
    """

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self.lock = threading.RLock()
        self.master: int | None = None
        self.slave: int | None = None
        self.torn = 0  # sends cut short because nobody read the pty
        self._open()

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.tty

    def _open(self) -> None:
        m, s = pty.openpty()
        tty.setraw(s)
        os.set_blocking(m, False)
        self.master, self.slave = m, s
        self.tty = os.ttyname(s)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.tty)
            os.replace(tmp, self.link)

    def send(self, data: bytes, within: float = 0.5) -> bool:
        """Write all of ``data``; False if the pty is gone, or if nobody read it for
        ``within`` s (the piece on the wire is then torn, counted in :attr:`torn`)."""
        view = memoryview(data)
        with self.lock:
            while view:
                if self.master is None:
                    return False
                try:
                    n = os.write(self.master, view)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return False
                view = view[n:]
                if view and not select.select([], [self.master], [], within)[1]:
                    self.torn += 1
                    return False
        return True

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write all of ``data``; AssertionError if the gateway did not read it in time."""
        if not self.send(data, timeout):
            raise AssertionError(f"{self.path}: nobody read {len(data)} bytes within {timeout} s")

    def read_available(self) -> bytes:
        """What the gateway sent that is waiting now (b'' if nothing)."""
        with self.lock:
            if self.master is None or not select.select([self.master], [], [], 0)[0]:
                return b""
            try:
                return os.read(self.master, 4096)
            except OSError:
                return b""

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read from the gateway until ``marker`` appears; b'' at the deadline."""
        deadline = time.monotonic() + timeout
        got = b""
        while marker not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            if select.select([self.master], [], [], left)[0]:
                got += self.read_available()
        return got

    def vanish(self) -> None:
        """Close both ends and remove the link: the port disappears."""
        with self.lock:
            if self.link is not None:
                self.link.unlink(missing_ok=True)
            for fd in (self.master, self.slave):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.master = self.slave = None

    def come_back(self) -> None:
        """A new pty behind the link."""
        with self.lock:
            self._open()

    def close(self) -> None:
        self.vanish()


class Responder:
    """A device thread on a :class:`PtyDevice`: reads command lines, records them in
    :attr:`commands` and writes ``reply(command)`` back (nothing when it returns b'').

    A context manager: the thread starts on entry; on exit it stops and the pty closes.
    """

    def __init__(self, reply: Callable[[str], bytes], device: PtyDevice | None = None) -> None:
        self.device = device or PtyDevice()
        self.reply = reply
        self.commands: list[str] = []
        self._got = Signal()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-responder", daemon=True)

    @property
    def path(self) -> str:
        return self.device.path

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if not select.select([self.device.master], [], [], 0.05)[0]:
                continue
            buf += self.device.read_available()
            *lines, buf = buf.split(b"\n")
            for line in lines:
                cmd = line.strip().decode()
                self._got.update(self.commands.append, cmd)
                answer = self.reply(cmd)
                if answer:
                    self.device.write(answer)

    def wait_commands(self, n: int, timeout: float = 5.0) -> list[str]:
        """The commands received once there are at least ``n`` (those so far at the deadline)."""
        try:
            self._got.wait(lambda: len(self.commands) >= n, timeout, f"{n} commands")
        except AssertionError:
            pass
        with self._got:
            return list(self.commands)

    def __enter__(self) -> Responder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.device.close()


class FrameSensor:
    """A sensor on a pty the test controls: binary frames of the simulated pump at
    ``rate`` (3 channels, ``frame`` samples each) from a pacing thread, reached through
    the symlink ``link``.

    :meth:`start` starts the data; :meth:`pause` / :meth:`resume` stop and restart it
    (the last byte's wall time is in ``last_write``); :meth:`vanish` / :meth:`come_back`
    unplug the pty and plug a new one in. ``noise = True`` writes garbage and truncated
    frames between the frames (counted in ``junk``). Commands from the gateway are
    recorded in ``commands`` and acknowledged with an ``ack <command>`` message frame.
    """

    def __init__(self, link: Path, rate: int = 8000, frame: int = 256, seed: int = 0) -> None:
        from firmware_bridge.sim.machine import Machine

        self.link, self.rate, self.frame = link, rate, frame
        self.device = PtyDevice(link)
        self.machine = Machine("pump", rate=rate, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.sent = 0  # valid data frames written
        self.junk = 0  # pieces of garbage / truncated frames written
        self.noise = False
        self.last_write = 0.0
        self.commands: list[str] = []
        self._running = threading.Event()
        self._quit = threading.Event()
        self._t = threading.Thread(target=self._loop, name="pty-sensor", daemon=True)
        self._t.start()

    @property
    def torn(self) -> int:
        """Writes cut short because nobody read the pty."""
        return self.device.torn

    def start(self) -> FrameSensor:
        self._running.set()
        return self

    def pause(self) -> float:
        """Stop sending; returns the wall time of the last byte written."""
        with self.device.lock:
            self._running.clear()
            return self.last_write

    def resume(self) -> None:
        self._running.set()

    def vanish(self) -> None:
        with self.device.lock:
            self._running.clear()
            self.device.vanish()

    def come_back(self) -> float:
        """A new pty behind the link, data flowing; returns the time it was back."""
        with self.device.lock:
            self.device.come_back()
            self._running.set()
            return time.time()

    def close(self) -> None:
        self._quit.set()
        self._running.set()
        self._t.join(2)
        self.device.close()

    def _garbage(self) -> bytes:
        from firmware_bridge.codec.frames import encode_frame

        kind = int(self.rng.integers(3))
        if kind == 0:  # random bytes, ending at a delimiter
            return bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 200)),
                                           dtype=np.uint8)) + b"\x00"
        if kind == 1:  # a truncated frame (cut short, then the delimiter)
            f = encode_frame(999_999, 0, np.zeros((16, 3), np.float32))
            return f[: int(self.rng.integers(1, len(f) - 1))] + b"\x00"
        f = bytearray(encode_frame(999_999, 0, np.ones((16, 3), np.float32)))
        f[int(self.rng.integers(0, len(f) - 1))] ^= 0x5A  # one corrupted byte
        return bytes(f)

    def _loop(self) -> None:
        from firmware_bridge.codec.frames import encode_frame

        period = self.frame / self.rate
        next_t = time.monotonic()
        while not self._quit.is_set():
            if not self._running.wait(0.5):
                next_t = time.monotonic()
                continue
            left = next_t - time.monotonic()
            if left > 0 and self._quit.wait(left):
                return
            next_t = max(next_t + period, time.monotonic() - 0.5)
            x = self.machine.generate(self.frame)
            with self.device.lock:
                if not self._running.is_set() or self.device.master is None:
                    continue
                data = encode_frame(self.seq, int(time.monotonic() * 1e6), x)
                if self.noise and not self.device.send(self._garbage()):
                    continue
                if self.noise:
                    self.junk += 1
                if not self.device.send(data):
                    continue
                self.last_write = time.time()
                self.seq += 1
                self.sent += 1
                self._answer()

    def _answer(self) -> None:
        """Acknowledge the commands waiting on the pty (STOP, RESET)."""
        from firmware_bridge.codec.frames import encode_message

        for cmd in self.device.read_available().decode("ascii", "replace").split():
            self.commands.append(cmd)
            self.device.send(encode_message(f"ack {cmd}"))


class Collector:
    """Blocks and events from a source (pass :meth:`on_block` and :meth:`on_event`),
    with :meth:`wait` on a condition and a deadline."""

    def __init__(self) -> None:
        self.blocks: list = []
        self.events: list = []
        self._sig = Signal()

    def on_block(self, block) -> None:
        self._sig.update(self.blocks.append, block)

    def on_event(self, event) -> None:
        self._sig.update(self.events.append, event)

    def wait(self, predicate: Callable[[Collector], object], timeout: float = 5.0,
             what: str = "") -> bool:
        """Block until ``predicate(self)`` is true; AssertionError naming ``what`` at the
        deadline. Returns True (so ``assert collector.wait(...)`` reads naturally)."""
        self._sig.wait(lambda: predicate(self), timeout, what or "the collector's condition")
        return True

    def wait_blocks(self, n: int, timeout: float = 5.0) -> list:
        """The next ``n`` blocks after those already collected."""
        with self._sig:
            start = len(self.blocks)
        self.wait(lambda c: len(c.blocks) >= start + n, timeout, f"{n} blocks")
        with self._sig:
            return self.blocks[start:start + n]

    def rows(self) -> np.ndarray:
        """Every sample collected, in order."""
        with self._sig:
            blocks = list(self.blocks)
        if not blocks:
            return np.empty((0, 0), np.float32)
        return np.concatenate([b.samples for b in blocks])

    def n_rows(self) -> int:
        with self._sig:
            return sum(b.n for b in self.blocks)

    def kinds(self, device: int | None = None) -> list[str]:
        """Event kinds in order; of one Modbus device only, when ``device`` is given."""
        with self._sig:
            return [e.kind for e in self.events
                    if device is None or e.message.startswith(f"device {device}")]
