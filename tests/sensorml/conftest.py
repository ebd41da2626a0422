"""Fixtures for the gateway's end-to-end tests: a trained, signed bundle made from the
simulator's healthy signal, and the ``e2e`` helpers that run the simulator and the
gateway as real processes (``support.procs``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support.procs import (
    log_json,
    sim_status,
    start_gateway,
    start_sim,
    wait_sim_state,
    write_config,
)

from firmware_bridge.sim.machine import Machine
from firmware_bridge.sim.schedule import SetPoint
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
def bundle(tmp_path_factory, keys) -> Path:
    """A signed IsolationForest bundle trained on 70 s of healthy simulated pump."""
    from training.fit import FeatureTable, fit_bundle

    X, spec = healthy_features(70.0, seed=11)
    out = tmp_path_factory.mktemp("bundles") / "v1"
    fit_bundle(FeatureTable(X, spec.names(), spec.to_dict()), out=out, key=keys[0],
               name="pump", version="1")
    return out


@pytest.fixture
def e2e() -> SimpleNamespace:
    """The process helpers under the names the end-to-end tests use."""
    return SimpleNamespace(start_sim=start_sim, sim_status=sim_status,
                           wait_sim_state=wait_sim_state, write_gateway_config=write_config,
                           start_gateway=start_gateway, log_msgs=log_json)
