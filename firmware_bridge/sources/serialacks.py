"""Commands waiting for the device's acknowledgement (``#ack STOP`` line or ``ack STOP``
message frame): the thread that sends a command waits on its own event; the reader
thread sets it when the ack arrives, or fails every waiter when the port goes down.

>>> acks = Acks()
>>> with acks.waiting("stop") as w:
...     acks.acked("STOP", t_recv=2.5)
...     w.event.is_set(), w.t_ack
(True, 2.5)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Acks", "Waiter"]


@dataclass(eq=False, slots=True)
class Waiter:
    """A command waiting for its ack: the reader sets ``t_ack`` (or ``error``) and ``event``."""

    cmd: str
    event: threading.Event = field(default_factory=threading.Event)
    t_ack: float = 0.0
    error: str = ""


class Acks:
    """The commands in flight on one port."""

    def __init__(self) -> None:
        self._waiters: list[Waiter] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def waiting(self, cmd: str) -> Iterator[Waiter]:
        """Register a waiter for ``cmd`` (case-insensitive) for the duration of the block."""
        w = Waiter(cmd.upper())
        with self._lock:
            self._waiters.append(w)
        try:
            yield w
        finally:
            with self._lock:
                self._waiters.remove(w)

    def acked(self, cmd: str, t_recv: float) -> None:
        """The device acknowledged ``cmd`` in the read at ``t_recv``."""
        cmd = cmd.upper()
        with self._lock:
            for w in self._waiters:
                if w.cmd == cmd and not w.event.is_set():
                    w.t_ack = t_recv
                    w.event.set()

    def fail_all(self, reason: str) -> None:
        """Wake every waiter with ``reason`` (the port went down, the source stopped)."""
        with self._lock:
            for w in self._waiters:
                w.error = reason
                w.event.set()
