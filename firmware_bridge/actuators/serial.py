"""Trip by sending ``STOP`` on the sensor's serial line and waiting for its ack.

With ``serial_link`` (the running :class:`SerialSource` that reads the same port) the
command goes through that source: ``serial_link.send_command("STOP", timeout_s)``
returns the ack latency or raises :class:`TripError`. Without a link the actuator opens
the port itself (at open time, so the trip does not pay for it), writes ``STOP\\n`` and
reads in chunks until the device's ack: a line ``#ack STOP`` (``format=csv``) or a
message frame ``ack STOP`` (``format=frames``, decoded with
:class:`firmware_bridge.codec.frames.FrameDecoder`); without ``format`` either counts. Input already waiting before the
command is discarded, so an old ack is never taken for a new one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import serial

from firmware_bridge.actuators.base import Actuator, log
from firmware_bridge.actuators.spec import ActuatorSpec
from firmware_bridge.errors import ConfigError, PortError, TripError
from firmware_bridge.parsing import split_url

#: command sent for each action (the ack echoes it)
COMMANDS = {"trip": "STOP", "reset": "RESET"}
_MAX_LINE = 4096


def _same_port(a: str, b: str) -> bool:
    """True if two port names are the same device (symlinks such as by-id resolved)."""
    if a == b:
        return True
    if a.startswith("/") and b.startswith("/"):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


class LineAckScanner:
    """Find ``#ack <CMD>`` lines in a CSV stream fed in arbitrary chunks.

    >>> s = LineAckScanner("STOP")
    >>> s.feed(b"0.1,0.2\\n#ack ST"), s.feed(b"OP\\r\\n1,2\\n")
    (False, True)
    """

    def __init__(self, command: str) -> None:
        self.want = f"#ack {command}".encode()
        self._tail = b""

    def feed(self, data: bytes) -> bool:
        buf = self._tail + data
        lines = buf.split(b"\n")
        self._tail = lines.pop()[-_MAX_LINE:]
        return any(line.strip() == self.want for line in lines)


class FrameAckScanner:
    """Find the message frame ``ack <CMD>`` in a framed stream."""

    def __init__(self, command: str) -> None:
        from firmware_bridge.codec.frames import FrameDecoder

        self.want = f"ack {command}"
        self._decoder = FrameDecoder()

    def feed(self, data: bytes) -> bool:
        for item in self._decoder.feed(data):
            text = getattr(item, "text", None)
            if isinstance(text, str) and text.strip() == self.want:
                return True
        return False


class AnyAckScanner:
    """Both at once, for a port whose format is not given (as the serial source detects it)."""

    def __init__(self, command: str) -> None:
        self.scanners = (LineAckScanner(command), FrameAckScanner(command))

    def feed(self, data: bytes) -> bool:
        return any([s.feed(data) for s in self.scanners])  # feed both, always


class SerialCommandActuator(Actuator):
    """``serial-command``: ``STOP``/``RESET`` on the device's own serial line."""

    kind = "serial-command"

    def __init__(self, spec: ActuatorSpec, serial_link: Any = None, *, connect: bool = True) -> None:
        super().__init__(spec)
        scheme, rest, query = split_url(spec.url)
        self.port_url = rest
        if serial_link is not None and not _same_port(getattr(serial_link, "port_name", rest), rest):
            log.info("%s: %s is not the serial source's port (%s); opening it directly",
                     self.name, rest, serial_link.port_name)
            serial_link = None
        self.link = serial_link
        self.format = query.get("format", "auto")
        if self.format not in ("csv", "frames", "auto"):
            raise ConfigError(f"{spec.key}.url: format={self.format!r} is not one of csv, frames")
        try:
            self.baud = int(query.get("baud", "115200"))
        except ValueError:
            raise ConfigError(f"{spec.key}.url: baud={query['baud']!r} is not an integer") from None
        if self.format != "csv" and serial_link is None:
            try:
                import firmware_bridge.codec.frames  # noqa: F401
            except ImportError as e:  # pragma: no cover - depends on the codec package
                raise ConfigError(f"{spec.key}.url: format=frames needs the frame codec ({e})") from None
        self.port: serial.SerialBase | None = None
        #: the link's outage count when the device last acked STOP (None: not stopped)
        self._acked_outages: int | None = None
        if serial_link is None and connect:
            self._open()

    def target(self) -> str:
        via = " via the running serial source" if self.link is not None else ""
        return f"{self.port_url}{via}"

    def _open(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(
                self.port_url, baudrate=self.baud, timeout=min(self.spec.timeout_s, 0.05),
                write_timeout=self.spec.timeout_s,
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortError(f"{self.spec.key}.url: cannot open {self.port_url}: {e}") from None
        self.port = port
        return port

    def _attempt(self, action: str, reason: str) -> str:
        cmd = COMMANDS[action]
        timeout = self.spec.timeout_s
        if self.link is not None:
            outages = self.link.stats().get("outages", 0)
            latency = self.link.send_command(cmd, timeout)
            self._acked_outages = outages if action == "trip" else None
            return f"{cmd} acked in {latency * 1e3:.2f} ms"
        port = self.port or self._open()
        scanner = _SCANNERS[self.format](cmd)
        port.reset_input_buffer()
        t0 = time.perf_counter()
        deadline = t0 + timeout
        port.write(f"{cmd}\n".encode())
        while True:
            chunk = port.read(port.in_waiting or 1)
            if chunk and scanner.feed(chunk):
                return f"{cmd} acked in {(time.perf_counter() - t0) * 1e3:.2f} ms"
            if time.perf_counter() >= deadline:
                ack = {"csv": f"#ack {cmd}", "frames": f"ack {cmd}"}.get(self.format, f"ack {cmd}")
                raise TripError(f"no {ack!r} from {self.port_url} within {timeout * 1e3:.0f} ms")

    def _check(self) -> bool | None:
        """Through the serial source: False once the port was lost and reopened since the
        device acked STOP (a device that rebooted forgets it was stopped); raises while
        the port is down. Without the source's link: None (nothing to tell from)."""
        link = self.link
        if link is None:
            return None
        if not getattr(link, "is_open", True):
            raise TripError(f"serial port {self.port_url}: port is down")
        acked = self._acked_outages
        return acked is not None and link.stats().get("outages", 0) == acked

    def _recover(self) -> None:
        if self.link is None and self.port is not None:
            try:
                self.port.close()
            finally:
                self.port = None

    def _close(self) -> None:
        self._recover()


_SCANNERS = {"csv": LineAckScanner, "frames": FrameAckScanner, "auto": AnyAckScanner}
