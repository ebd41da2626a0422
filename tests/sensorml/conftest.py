"""Fixtures for the gateway's end-to-end tests: a trained, signed bundle made from the
simulator's healthy signal, and helpers that run the simulator and the gateway as real
processes and read their output lines with deadlines."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from gwprocs import Proc, log_json, start_gateway, start_sim, write_config

from firmware_bridge.sim.machine import Machine
from firmware_bridge.sim.schedule import SetPoint
from sensorml.bundles.bundle import keygen
from sensorml.edge.features import FeatureExtractor, FeatureSpec

RATE = 25600
SPEC = dict(channels=["ax", "ay", "az"], sample_rate=RATE, window=1024, hop=512)

#: speed and load changes the healthy runs of the tests go through
HEALTHY_SCHEDULE = (SetPoint(0.0, rpm=2970, load=0.75), SetPoint(10, rpm=2700, load=0.5, ramp_s=3),
                    SetPoint(25, rpm=2900, load=0.95, ramp_s=3), SetPoint(40, rpm=2600, load=0.6,
                                                                          ramp_s=4),
                    SetPoint(55, rpm=2970, load=0.8, ramp_s=3))


def healthy_features(seconds: float, seed: int) -> tuple[np.ndarray, FeatureSpec]:
    """Features of a healthy simulated run, computed by the edge's own extractor."""
    spec = FeatureSpec.from_dict(dict(SPEC))
    m = Machine("pump", rate=RATE, seed=seed, schedule=HEALTHY_SCHEDULE)
    x = m.generate(int(seconds * RATE))
    ext = FeatureExtractor(spec)
    rows = [ext(x[i:i + spec.window]) for i in range(0, len(x) - spec.window + 1, spec.hop)]
    return np.vstack(rows).astype(np.float32), spec


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, keys) -> Path:
    """A signed IsolationForest bundle trained on 70 s of healthy simulated pump."""
    from training.fit import FeatureTable, fit_bundle

    X, spec = healthy_features(70.0, seed=11)
    out = tmp_path_factory.mktemp("bundles") / "v1"
    fit_bundle(FeatureTable(X, spec.names(), spec.to_dict()), out=out, key=keys[0],
               name="pump", version="1")
    return out


def sim_status(sim: Proc) -> str:
    """The simulator's own account of the machine (``running``, ``coasting``, ...)."""
    while not sim.out.empty():
        sim.out.get_nowait()
    sim.send("status")
    return sim.expect(lambda s: s.startswith("ok status"), 5, "answer status")[10:]


def wait_sim_state(sim: Proc, states: tuple[str, ...], timeout: float) -> str:
    """Ask the simulator for its state until it is one of ``states`` (the Modbus device
    applies coil writes on its next register update, up to 100 ms later)."""
    deadline = time.monotonic() + timeout
    while True:
        state = sim_status(sim).split()[0]
        if state in states or time.monotonic() > deadline:
            return state if state in states else ""


def write_gateway_config(tmp_path: Path, body: str) -> Path:
    return write_config(tmp_path, body)


class E2E:
    """The helpers above, handed to tests as the ``e2e`` fixture."""

    start_sim = staticmethod(start_sim)
    sim_status = staticmethod(sim_status)
    wait_sim_state = staticmethod(wait_sim_state)
    write_gateway_config = staticmethod(write_gateway_config)
    start_gateway = staticmethod(start_gateway)
    log_msgs = staticmethod(log_json)


@pytest.fixture
def e2e() -> type[E2E]:
    return E2E
