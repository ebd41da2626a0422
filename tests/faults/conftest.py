"""Fixtures of the fault suite: real processes (simulator, gateway), a pty sensor the test
drives (``support.devices.FrameSensor``), buffer checks, and the report of measured figures.

Every scenario records what it measured with ``fault_report.add(scenario, **figures)``:
printed at once (``pytest -s`` shows them) and, when ``SENSORML_FAULT_REPORT`` names a
file, written there as JSON at the end of the session for the README's table.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import procs
from support.devices import FrameSensor
from support.procs import Proc, log_json, start_sim
from support.waiting import wait_until

from training.simdata import zscore_bundle

GW_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ the report
class FaultReport:
    """Figures measured by the scenarios, keyed by scenario name."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    def add(self, scenario: str, **figures) -> None:
        self.figures.setdefault(scenario, {}).update(figures)
        print(f"\n[fault figures] {scenario}: {json.dumps(figures, default=str)}", flush=True)

    def write(self) -> None:
        path = os.environ.get("SENSORML_FAULT_REPORT")
        if not path or not self.figures:
            return
        p = Path(path)
        old = {}
        if p.exists():
            try:
                old = json.loads(p.read_text())
            except (OSError, ValueError):
                old = {}
        for k, v in self.figures.items():
            old.setdefault(k, {}).update(v)
        p.write_text(json.dumps(old, indent=2, default=str) + "\n")


@pytest.fixture(scope="session")
def fault_report() -> Iterator[FaultReport]:
    r = FaultReport()
    yield r
    r.write()


def summary(values: list[float], digits: int = 1, scale: float = 1e3) -> dict:
    """min/p50/p95/max of ``values`` (seconds) in ms, rounded."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, float) * scale
    return {"n": len(a), "min": round(float(a.min()), digits),
            "p50": round(float(np.percentile(a, 50)), digits),
            "p95": round(float(np.percentile(a, 95)), digits),
            "max": round(float(a.max()), digits)}


# ------------------------------------------------------------------ the model
@pytest.fixture(scope="session")
def bundle(tmp_path_factory, keys) -> Path:
    """A signed z-score bundle for 3 x 25.6 kHz, window 1024, hop 512
    (:func:`training.simdata.zscore_bundle`, as the soak uses)."""
    return zscore_bundle(tmp_path_factory.mktemp("fault_bundles") / "v1", keys[0])


@pytest.fixture(scope="session")
def bundle_8k(tmp_path_factory, keys) -> Path:
    """The same kind of bundle for 3 x 8 kHz (the pty device of the link tests)."""
    return zscore_bundle(tmp_path_factory.mktemp("fault_bundles") / "v1_8k", keys[0], rate=8000)


# ------------------------------------------------------------------ processes
def write_config(tmp_path: Path, body: str, name: str = "gateway.toml",
                 state: str = "state") -> Path:
    return procs.write_config(tmp_path, body, device_id="fault-pump", name=name, state=state)


def pump_body(url: str, bundle: Path, pub: Path, *, argv: tuple[str, ...] = ("/bin/true",),
              reset_argv: tuple[str, ...] = (), extra: str = "") -> str:
    """A config body: the source ``url``, the signed bundle, a hard limit on ``ax`` (the
    simulated ``spikes`` fault passes it) and a command hook as the trip; then ``extra``."""
    def toml_list(a: tuple[str, ...]) -> str:
        return json.dumps(list(a))

    reset = f"reset_argv = {toml_list(reset_argv)}\n" if reset_argv else ""
    return (f'[source]\nurl = "{url}"\n[model]\nbundle = "{bundle}"\n'
            f'trusted_keys = ["{pub}"]\n[[limits]]\nchannel = "ax"\nabove = 4.0\n'
            f'[[trip]]\nkind = "command"\nargv = {toml_list(argv)}\n{reset}'
            f'[reset]\nmin_interval = "0s"\n{extra}')


def start_gateway(cfg: Path, log_name: str = "gateway.log", wait: bool = True) -> Proc:
    """The gateway with one BLAS/OpenMP thread, as on a small gateway board."""
    return procs.start_gateway(cfg, log_name, wait, env=GW_ENV)


# ------------------------------------------------------------------ the buffer
def snapshot(db: Path) -> dict:
    """Ids and counts a reader sees now: ``{table: (count, max id)}`` plus event kinds."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        out = {t: c.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {t}").fetchone()
               for t in ("events", "scores", "raw_windows")}
        out["event_ids"] = {i for (i,) in c.execute("SELECT id FROM events")}
        return out
    finally:
        c.close()


def integrity(db: Path) -> str:
    c = sqlite3.connect(db, timeout=5)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


# ------------------------------------------------------------------ a pty sensor
@pytest.fixture
def pty_device() -> Iterator[type[FrameSensor]]:
    """Factory of :class:`~support.devices.FrameSensor` (a sensor streaming frames on a
    pty behind a symlink); all are closed at the end of the test."""
    made: list[FrameSensor] = []

    def make(*args, **kw) -> FrameSensor:
        d = FrameSensor(*args, **kw)
        made.append(d)
        return d

    yield make  # type: ignore[misc]
    for d in made:
        d.close()


def status(state_dir: Path) -> dict:
    """The running gateway's ``/status`` (control port on 127.0.0.1)."""
    from sensorml.gateway.client import call

    return call(state_dir, "/status")


def reset(state_dir: Path, by: str = "fault suite", force: bool = False) -> dict:
    """Reset the latch; ``force``: even while the trip's cause is present."""
    from sensorml.gateway.client import call

    return call(state_dir, "/reset", {"by": by, "force": force})


@pytest.fixture
def fx() -> SimpleNamespace:
    """The helpers above (and the shared ones they build on), for the fault scenarios."""
    return SimpleNamespace(
        write_config=write_config, pump_body=pump_body, start_gateway=start_gateway,
        start_sim=start_sim, log_json=log_json, snapshot=snapshot, integrity=integrity,
        rows=rows, wait_until=wait_until, summary=summary, status=status, reset=reset,
        GW_ENV=GW_ENV)
