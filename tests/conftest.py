"""Suite-wide settings: hypothesis runs derandomized under CI (a property test found a
failure once means a bug to fix, not a coin to flip again), and without per-example
deadlines (this 2-core machine is shared by process-level tests). Fixtures every folder
uses: ``procs`` (processes a test starts, ``support.procs``, all stopped at its end) and
``keys`` (one Ed25519 signing key pair for the session). The helpers themselves are in
``tests/support/``."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support.procs import Proc, stop_all

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; all stopped at the end whatever happens."""
    started: list[Proc] = []
    yield started
    stop_all(started)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    """``(private key, public key)`` files, made once for the session."""
    from sensorml.bundles.signing import keygen

    return keygen(tmp_path_factory.mktemp("keys"))
