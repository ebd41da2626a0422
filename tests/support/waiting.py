"""Waiting with a deadline, never a sleep: :func:`wait_until` polls a read of another
thread's or process's state, :class:`Signal` lets one thread wake another on a change.

>>> n = iter(range(5))
>>> wait_until(lambda: next(n) >= 3, 1.0, "the count to reach 3")
True
>>> wait_until(lambda: False, 0.05, "nothing")
Traceback (most recent call last):
...
AssertionError: timed out after 0.05 s waiting for nothing
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Signal", "wait_until"]

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, what: str, every: float = 0.02) -> T:
    """Call ``pred`` every ``every`` s until it returns something truthy; return that.

    For state that cannot signal a change (a file, another process's port, a Modbus
    register): polls are bounded waits on an event that nothing sets. At the deadline,
    an ``AssertionError`` naming ``what``.
    """
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        tick.wait(min(every, left))


class Signal:
    """A condition a producer notifies and a consumer waits on with a deadline.

    >>> s = Signal(); got = []
    >>> threading.Thread(target=lambda: s.update(got.append, 1)).start()
    >>> s.wait(lambda: got == [1], 5.0, "the append")
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def update(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` under the lock and wake every waiter."""
        with self._cond:
            fn(*args)
            self._cond.notify_all()

    def wait(self, pred: Callable[[], object], timeout: float, what: str) -> None:
        """Block until ``pred()`` is true (checked under the lock); AssertionError at the
        deadline, naming ``what``."""
        with self._cond:
            if not self._cond.wait_for(pred, timeout):
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def __enter__(self) -> Signal:
        self._cond.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cond.__exit__(*exc)
