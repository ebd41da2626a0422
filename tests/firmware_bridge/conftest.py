"""Fixtures for the serial tests: real ptys playing the device and a collector of what a
source emits (``support.devices``; waits have deadlines, never ``sleep``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.devices import Collector, PtyDevice


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
