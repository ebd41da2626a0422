"""The model slot, in process: loads and refuses bundles, swaps atomically for the fast
path, runs a staged candidate in shadow and promotes or rolls it back.

Real: unsigned bundles written to ``tmp_path`` (real ONNX graphs, scored by
onnxruntime), the bundle store with its links and ``deploy.json``, the shadow runner's
thread, and, for the swap test, a FastPath fed real blocks in its own thread while
another thread swaps the model. Faked: the recorder (a list of calls; the slot and the
fast path only hand it events and scores) and the watchdog's clock.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.bundles import example_manifest

from firmware_bridge.block import Block
from sensorml.bundles.bundle import write_bundle
from sensorml.bundles.staging import CANDIDATE, CURRENT, BundleStore
from sensorml.config import DecisionConfig, DeployConfig, ModelConfig
from sensorml.edge.fastpath import ActiveModel, FastPath
from sensorml.edge.features import FeatureSpec
from sensorml.edge.watchdog import TripLatch, Watchdog
from sensorml.gateway.slot import ModelSlot
from sensorml.gateway.telemetry import GatewayMetrics

pytestmark = pytest.mark.timeout(60)

SPEC = FeatureSpec.from_dict(dict(channels=["ax"], sample_rate=1000, window=64, hop=64))
NAMES = SPEC.names()
RMS = NAMES.index("ax.rms")
THRESHOLDS = {"warn": 1000.0, "alarm": 2000.0, "trip": 3000.0}  # never reached here


def model(bias: float) -> bytes:
    """score = window RMS + ``bias``: the score tells which model made it."""
    w = np.zeros((len(NAMES), 1), np.float32)
    w[RMS, 0] = 1.0
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["score"])],
        "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(NAMES)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([bias], np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def bundle(path: Path, version: str, bias: float) -> Path:
    man = example_manifest(len(NAMES), name="pump", version=version, feature_spec=SPEC.to_dict(),
                           feature_names=list(NAMES), thresholds=THRESHOLDS)
    return write_bundle(path, man, model(bias), None)


class Recorder:
    """Stands in for the recorder: keeps the events and scores it is handed."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.scores: list[tuple[float, str]] = []

    def record_event(self, kind, detail=None, t=None, priority=0):
        self.events.put((kind, detail))

    def record_score(self, t, window_seq, score, verdict, model_version, features=None):
        self.scores.append((score, model_version))

    def record_raw(self, *args):
        pass

    def register_metrics(self, registry):
        pass

    def next_model_event(self, action: str, timeout: float = 20.0) -> dict:
        """The next ``model`` event with this action (others are skipped)."""
        while True:
            kind, detail = self.events.get(timeout=timeout)
            if kind == "model" and detail["action"] == action:
                return detail


def make_slot(tmp_path: Path, bundle_path: Path | None, rec: Recorder, refused: list,
              **deploy) -> ModelSlot:
    return ModelSlot(ModelConfig(bundle=bundle_path, allow_unsigned=True), DecisionConfig(),
                     DeployConfig(**deploy), SPEC, BundleStore(tmp_path / "bundles"),
                     record_event=rec.record_event, on_refused=lambda: refused.append(1))


def test_a_refused_reload_keeps_the_live_model_and_says_why(tmp_path):
    rec, refused = Recorder(), []
    live = bundle(tmp_path / "b", "1", 0.0)
    slot = make_slot(tmp_path, live, rec, refused)
    assert slot.load() and slot.live.version == "1" and slot.error is None
    first = slot.live
    data = bytearray((live / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (live / "model.onnx").write_bytes(bytes(data))
    slot.poll()  # the watch thread's round: the file changed, reload it
    assert slot.live is first and "sha256" in slot.error and refused == [1]
    assert rec.next_model_event("refused")["error"] == slot.error[:500]
    bundle(tmp_path / "b2", "2", 0.0)
    os.rename(tmp_path / "b", tmp_path / "old")
    os.rename(tmp_path / "b2", tmp_path / "b")
    slot.poll()
    assert slot.live.version == "2" and slot.error is None
    assert rec.next_model_event("loaded")["previous"] == "1"
    slot.poll()  # nothing changed: no reload
    assert rec.events.empty()


def test_a_swap_is_whole_for_every_window_the_fast_path_scores(tmp_path):
    """Windows are scored in one thread while another swaps two models as fast as it can;
    every recorded score was made by the model whose version it is recorded with."""
    rec, refused = Recorder(), []
    one = make_slot(tmp_path, bundle(tmp_path / "v1", "1", 0.0), rec, refused)
    two = make_slot(tmp_path, bundle(tmp_path / "v2", "2", 100.0), rec, refused)
    assert one.load() and two.load()
    models = [one.live, two.live]
    slot = make_slot(tmp_path, bundle(tmp_path / "v0", "1", 0.0), rec, refused)
    assert slot.load()
    fast = FastPath(SPEC, models=slot, limits=None, slow_limits=None,
                    watchdog=Watchdog(10.0, clock=lambda: 0.0), latch=TripLatch(), actuators=[],
                    recorder=rec, metrics=GatewayMetrics(rec))
    x = (np.sin(np.arange(64) / 3.0)[:, None]).astype(np.float32)
    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            slot.live = models[i & 1]  # what ModelSlot._swap does: one assignment
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    t = threading.Thread(target=swap)
    t.start()
    try:
        for i in range(3000):
            fast.on_fast_block(Block(t0=i * 0.064, rate=1000.0, samples=x, channels=("ax",), seq=i))
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    seen = {v for _, v in rec.scores}
    assert len(rec.scores) == 3000 and seen == {"1", "2"}  # both models scored windows
    for score, version in rec.scores:
        assert (score > 50) == (version == "2"), (score, version)


def test_a_staged_candidate_runs_in_shadow_then_is_promoted(tmp_path):
    rec, refused = Recorder(), []
    slot = make_slot(tmp_path, bundle(tmp_path / "v1", "1", 0.0), rec, refused, shadow_windows=20)
    assert slot.load()
    store = slot.store
    cand = bundle(tmp_path / "v2", "2", 0.5)
    store.stage({f: (cand / f).read_bytes() for f in ("manifest.json", "model.onnx")},
                trusted_keys=[], allow_unsigned=True, expected_spec=SPEC)
    store.set_candidate("pump", "2")
    slot.check_candidate()
    runner = slot.shadow
    assert runner is not None and runner.version == "2" and slot.live.version == "1"
    assert rec.next_model_event("shadow")["live"] == "1"
    x = np.zeros(len(NAMES), np.float32)
    for _ in range(20):
        runner.offer(x, 0)  # as the fast path does after each live decision
    promoted = rec.next_model_event("promoted")
    assert promoted["previous"] == "1" and "20 windows without errors" in promoted["reason"]
    assert slot.live.version == "2" and slot.live.scorer is runner.scorer
    assert slot.shadow is None and slot.last_shadow["promote"] is True
    assert store.link(CURRENT) == ("pump", "2") and store.link(CANDIDATE) is None
    assert slot.status()["model"] == {"name": "pump", "version": "2"} and refused == []


def test_a_candidate_that_fails_in_shadow_is_rolled_back_and_the_live_model_stays(tmp_path):
    rec, refused = Recorder(), []
    slot = make_slot(tmp_path, bundle(tmp_path / "v1", "1", 0.0), rec, refused, shadow_windows=10)
    assert slot.load()
    live = slot.live
    cand = bundle(tmp_path / "v2", "2", float("nan"))  # loads, scores NaN
    slot.store.stage({f: (cand / f).read_bytes() for f in ("manifest.json", "model.onnx")},
                     trusted_keys=[], allow_unsigned=True, expected_spec=SPEC)
    slot.store.set_candidate("pump", "2")
    slot.check_candidate()
    for _ in range(10):
        slot.shadow.offer(np.zeros(len(NAMES), np.float32), 0)
    back = rec.next_model_event("rolled_back")
    assert back["reason"].startswith("10 of 10 windows failed in shadow")
    assert slot.live is live and slot.shadow is None and refused == [1]
    assert slot.store.refused("pump", "2")["by"] == "shadow"
    assert slot.store.link(CANDIDATE) is None


def test_with_no_live_model_a_loadable_candidate_goes_live_at_once(tmp_path):
    rec, refused = Recorder(), []
    slot = make_slot(tmp_path, None, rec, refused)
    assert not slot.load() and slot.live is None
    cand = bundle(tmp_path / "v2", "2", 0.0)
    slot.store.stage({f: (cand / f).read_bytes() for f in ("manifest.json", "model.onnx")},
                     trusted_keys=[], allow_unsigned=True, expected_spec=SPEC)
    slot.store.set_candidate("pump", "2")
    slot.check_candidate()
    assert isinstance(slot.live, ActiveModel) and slot.live.version == "2"
    assert rec.next_model_event("promoted")["reason"] == "no live model to compare with"
