"""The serial transport: opening a port (one line naming the fix when it fails) and moving
the bytes that arrive to a handler. What the bytes mean is the source's decoder's
business (:mod:`firmware_bridge.sources.serial`), as pyserial's ``ReaderThread`` keeps its
read loop apart from its ``Protocol``.
"""

from __future__ import annotations

import errno
import io
import os
import select
import threading
import time
from collections.abc import Callable

import serial

from firmware_bridge.errors import PortError

__all__ = ["describe_open_error", "open_port", "read_until_stopped"]


def describe_open_error(port: str, exc: BaseException) -> str:
    """One line naming the port, what went wrong and the likely fix."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc.__cause__, OSError):
        code = exc.__cause__.errno
    if code == errno.ENOENT or (code is None and "No such file" in str(exc)):
        by_id = "/dev/serial/by-id"
        present = sorted(os.listdir(by_id)) if os.path.isdir(by_id) else []
        hint = (f"ports present in {by_id}: {', '.join(present)}" if present
                else "check the path and that the device is plugged in")
        return f"serial port {port}: does not exist — {hint}"
    if code in (errno.EACCES, errno.EPERM):
        return (f"serial port {port}: permission denied — add the user to the dialout group "
                "(sudo usermod -aG dialout $USER, then log in again)")
    if code == errno.EBUSY or "lock" in str(exc).lower():
        return f"serial port {port}: busy — another program has it open (close it, or check `fuser {port}`)"
    return f"serial port {port}: cannot open: {exc}"


def open_port(port: str, baud: int, read_timeout: float) -> serial.SerialBase:
    """Open ``port`` (a device path, or any pyserial URL such as ``loop://``); a device
    path is opened exclusively. Raises :class:`PortError` with a one-line fix."""
    try:
        kwargs: dict = {"baudrate": baud, "timeout": read_timeout}
        if "://" not in port:
            kwargs["exclusive"] = True
        return serial.serial_for_url(port, **kwargs)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortError(describe_open_error(port, exc)) from exc


def read_until_stopped(port: serial.SerialBase, stop: threading.Event, read_timeout: float,
                       handle: Callable[[bytes, float], None]) -> None:
    """Hand whatever arrives on ``port`` to ``handle(data, t_recv)`` until ``stop`` is set.

    Returns when stopped; raises ``serial.SerialException`` or ``OSError`` when the port
    fails (an end of file on a tty means the device is gone).
    """
    try:
        fd = port.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, serial.SerialException):
        fd = None  # loop://, socket://, rfc2217:// ...: pyserial's own reads
    if fd is None:
        while not stop.is_set():
            waiting = port.in_waiting
            data = port.read(waiting or 1)
            if not data:
                continue
            if not waiting:
                more = port.in_waiting
                if more:
                    data += port.read(more)
            handle(data, time.perf_counter())
        return
    # A real tty: one select and one read per arrival (pyserial's read(1) + in_waiting
    # + read(n) costs two selects, two reads and an ioctl: ~50 µs more per frame).
    while not stop.is_set():
        ready, _, _ = select.select((fd,), (), (), read_timeout)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:  # the other end is gone (pty closed, USB unplugged)
            raise serial.SerialException(f"{port.port}: device disconnected")
        handle(data, time.perf_counter())
