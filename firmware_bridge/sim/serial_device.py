"""The simulated machine's sensor on a pseudo-terminal, as a microcontroller would serve it.

:class:`SerialDevice` opens a pty (``pty.openpty()``); the gateway opens the slave path
(e.g. ``/dev/pts/7``) like a USB serial port. The device writes sample blocks in CSV
lines (``# channels: ax,ay,az`` header at start, after RESET and every ``header_every_s``
so a reader that connects late learns the channels) or binary frames
(:func:`firmware_bridge.codec.frames.encode_frame`), and reads command lines back:

    STOP\\n   → the machine is stopped; the device answers ``#ack STOP`` (CSV) or a
               message frame ``ack STOP`` (frames)
    RESET\\n  → restarts it; ``#ack RESET`` / ``ack RESET``
    HB n\\n   → the gateway's heartbeat (PROTOCOL.md §4); no answer
    other    → ``#err unknown command: X`` / message frame ``err unknown command: X``

Like a UART with nobody reading, the device never blocks on a full pty buffer: when more
than ``max_pending`` bytes wait, new blocks are dropped whole (counted in ``dropped``),
so the stream stays well-formed and frame sequence numbers show the gap.
"""

from __future__ import annotations

import errno
import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable

import numpy as np

from firmware_bridge.codec.csvlines import encode_csv
from firmware_bridge.codec.frames import encode_frame, encode_message
from firmware_bridge.errors import ConfigError, PortError

FORMATS = ("csv", "frames")


class SerialDevice:
    """A pty that serves sample blocks and answers STOP/RESET (see module docstring).

    ``on_command(word)`` is called from the device's reader thread with the upper-cased
    command; it returns the ack text (e.g. ``"ack STOP"``), None for a line that gets no
    answer (a heartbeat), or raises ``ConfigError`` for an unknown command.
    """

    def __init__(
        self,
        fmt: str = "frames",
        channels: tuple[str, ...] = ("ax", "ay", "az"),
        on_command: Callable[[str], str | None] | None = None,
        *,
        max_pending: int = 256 * 1024,
        header_every_s: float = 1.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.channels = tuple(channels)
        self.on_command = on_command or (lambda word: f"ack {word}")
        self.max_pending = max_pending
        self.header_every_s = header_every_s
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no line buffering, no CR/LF translation
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._pending = bytearray()
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_header = -1e9
        self.counts = {"blocks": 0, "dropped": 0, "bytes": 0, "commands": 0}

    # -------------------------------------------------------------- writing
    def send_block(self, seq: int, t0_us: int, samples: np.ndarray) -> bool:
        """Encode and write one block; False if it was dropped (reader not keeping up)."""
        if self.fmt == "frames":
            data = encode_frame(seq, t0_us, samples)
        else:
            now = time.monotonic()
            header = now - self._last_header >= self.header_every_s
            if header:
                self._last_header = now
            data = encode_csv(samples, self.channels if header else None)
        with self._wlock:
            self._flush()
            if len(self._pending) > self.max_pending:
                self.counts["dropped"] += 1
                return False
            self._pending += data
            self._flush()
        self.counts["blocks"] += 1
        return True

    def send_message(self, text: str) -> None:
        """Write a message: a ``#text`` line (CSV) or a message frame (frames)."""
        data = encode_message(text) if self.fmt == "frames" else f"#{text}\n".encode()
        with self._wlock:
            self._pending += data
            self._flush()

    def resend_header(self) -> None:
        """Send the CSV channel header with the next block (e.g. after RESET)."""
        self._last_header = -1e9

    def _flush(self) -> None:
        while self._pending:
            try:
                k = os.write(self._master, self._pending)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return
                raise
            self.counts["bytes"] += k
            del self._pending[:k]

    # -------------------------------------------------------------- reading
    def start(self) -> SerialDevice:
        self._thread = threading.Thread(target=self._read_loop, name="sim-serial", daemon=True)
        self._thread.start()
        return self

    def _read_loop(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                with self._wlock:
                    self._flush()
                continue
            try:
                data = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._handle(line.strip().decode("ascii", errors="replace"))
            if len(buf) > 1024:  # garbage without newlines
                buf = b""

    def _handle(self, line: str) -> None:
        if not line:
            return
        word = line.upper()
        self.counts["commands"] += 1
        try:
            ack = self.on_command(word)
        except ConfigError:
            ack = f"err unknown command: {line}"
        if ack is not None:
            self.send_message(ack)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


def open_device(fmt: str, channels: tuple[str, ...], on_command) -> SerialDevice:
    """Open a :class:`SerialDevice`, turning OS errors into a PortError."""
    try:
        return SerialDevice(fmt, channels, on_command)
    except OSError as exc:
        raise PortError(f"serial: cannot open a pty ({exc.strerror}); is /dev/ptmx available?") from None
