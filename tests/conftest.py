"""Suite-wide settings: hypothesis runs derandomized under CI (a property test found a
failure once means a bug to fix, not a coin to flip again), and without per-example
deadlines (this 2-core machine is shared by process-level tests). The ``procs`` fixture:
processes a test starts (``tests/gwprocs.py``), all stopped at its end."""

import os
from collections.abc import Iterator

import pytest
from gwprocs import Proc, stop_all
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; all stopped at the end whatever happens."""
    started: list[Proc] = []
    yield started
    stop_all(started)
