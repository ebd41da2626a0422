"""systemd's notify protocol over its plain socket: no library, no thread of its own.

``Type=notify`` units get ``$NOTIFY_SOCKET``, an ``AF_UNIX`` datagram socket; a service
sends newline-separated ``KEY=VALUE`` lines to it (``READY=1``, ``WATCHDOG=1``,
``STOPPING=1``, ``STATUS=...``; sd_notify(3)). A name starting with ``@`` is in the
abstract namespace (a leading NUL byte). With ``WatchdogSec=`` systemd also sets
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``: only that process is meant) and kills the
service when no ``WATCHDOG=1`` came for that long; pinging at half of it is the advice
of sd_watchdog_enabled(3). Without ``$NOTIFY_SOCKET`` :func:`from_environ` returns None
and nothing else happens.

>>> from_environ({}) is None
True
>>> watchdog_period({"WATCHDOG_USEC": "2000000"}, pid=7)
1.0
>>> watchdog_period({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, pid=7) is None
True
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "from_environ", "watchdog_period"]


class Notifier:
    """A datagram socket to ``address`` (a path, or ``@name`` for the abstract namespace)."""

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)  # a full socket drops a ping, it never stalls a caller
        self.sent = 0
        self.failed = 0

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (counted) if the socket refused it."""
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


def from_environ(env: Mapping[str, str] = os.environ) -> Notifier | None:
    """A :class:`Notifier` for ``$NOTIFY_SOCKET``, or None when systemd did not ask."""
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not address.startswith(("/", "@")):
        return None
    return Notifier(address)


def watchdog_period(env: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when the
    unit has no watchdog or it is meant for another process (``$WATCHDOG_PID``)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None
    return usec / 2e6
