"""Generic helpers for serial tests: a real pty playing the device, and a collector
that waits (with a deadline, never ``sleep``) for blocks and events from a source."""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator

import numpy as np
import pytest


class PtyDevice:
    """The device end of a real pseudo-terminal from ``pty.openpty()``.

    ``path`` is the slave (what the gateway opens, like ``/dev/ttyUSB0``); the test
    writes what the device sends with :meth:`write` and reads what the gateway sent with
    :meth:`read_until`. The slave is put in raw mode at once so nothing is echoed or
    translated before pyserial opens it.
    """

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read from the gateway until ``marker`` appears; b'' at the deadline."""
        deadline = time.monotonic() + timeout
        got = b""
        while marker not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                got += os.read(self.master, 4096)
        return got

    def close(self) -> None:
        """Close both ends: the port disappears as when a USB adapter is unplugged."""
        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self.slave)


class Collector:
    """Collects blocks and events from a source; ``wait`` blocks on a condition."""

    def __init__(self) -> None:
        self.blocks: list = []
        self.events: list = []
        self._cond = threading.Condition()

    def on_block(self, block) -> None:
        with self._cond:
            self.blocks.append(block)
            self._cond.notify_all()

    def on_event(self, event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[Collector], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def rows(self) -> np.ndarray:
        with self._cond:
            blocks = list(self.blocks)
        if not blocks:
            return np.empty((0, 0), np.float32)
        return np.concatenate([b.samples for b in blocks])

    def n_rows(self) -> int:
        with self._cond:
            return sum(b.n for b in self.blocks)

    def kinds(self) -> list[str]:
        with self._cond:
            return [e.kind for e in self.events]


@pytest.fixture
def make_pty() -> Iterator[Callable[[], PtyDevice]]:
    """Factory of pty devices; all are closed at the end of the test."""
    made: list[PtyDevice] = []

    def factory() -> PtyDevice:
        dev = PtyDevice()
        made.append(dev)
        return dev

    yield factory
    for dev in made:
        dev.close()


@pytest.fixture
def pty_device(make_pty) -> PtyDevice:
    return make_pty()


@pytest.fixture
def collector() -> Collector:
    return Collector()
