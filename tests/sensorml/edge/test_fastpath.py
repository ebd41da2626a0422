"""The fast path's safety behaviour, unit by unit, with real parts.

Real: the windower, the feature extractor, a real ONNX model (score = the window's RMS,
a one-node MatMul graph written as an unsigned bundle) loaded through the gateway's
:class:`~sensorml.gateway.slot.ModelSlot` and scored by onnxruntime, the decider, hard
limits, the watchdog, the trip latch, a ``command`` trip actuator (a real ``/bin/sh``
hook appending to a file) and a real :class:`~sensorml.buffer.recorder.Recorder`
writing SQLite in ``tmp_path``.

Faked: the clocks (the watchdog's and the start-up inhibit's monotonic clock is a
settable number, so no test sleeps), and the recorder is a subclass that notes each
call, and how many trip commands the hook had run by then, before doing its real work.
The operator's reset is a callback doing what ``Gateway.reset`` does to these objects
(clear the latch, start the inhibit again).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.bundles import example_manifest

from firmware_bridge.actuators import ActuatorSpec, open_actuator
from firmware_bridge.block import Block, Quality
from sensorml.buffer.recorder import Recorder
from sensorml.bundles.bundle import write_bundle
from sensorml.bundles.staging import BundleStore
from sensorml.config import DecisionConfig, DeployConfig, ModelConfig
from sensorml.edge.decider import Verdict
from sensorml.edge.fastpath import FastPath
from sensorml.edge.features import FeatureSpec
from sensorml.edge.limits import HardLimit, LimitChecker
from sensorml.edge.watchdog import TripLatch, Watchdog
from sensorml.gateway.slot import ModelSlot
from sensorml.gateway.telemetry import GatewayMetrics

SPEC = FeatureSpec.from_dict(dict(channels=["ax"], sample_rate=1000, window=64, hop=64))
NAMES = SPEC.names()
THRESHOLDS = {"warn": 1.0, "alarm": 2.0, "trip": 3.0}  # on the window's RMS
N = SPEC.window  # one block is one window


def rms_model(n: int, col: int) -> bytes:
    """score = x[col] (the window's RMS) as a real ONNX graph."""
    w = np.zeros((n, 1), np.float32)
    w[col, 0] = 1.0
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["score"])], "rms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


class Clock:
    """A settable monotonic clock."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class NotingRecorder(Recorder):
    """The real recorder; each call first notes ``(what, detail, trips the hook ran)``."""

    def __init__(self, path: Path, hook_log: Path) -> None:
        super().__init__(path)
        self.hook_log = hook_log
        self.calls: list[tuple[str, object, int]] = []

    def _trips_run(self) -> int:
        return self.hook_log.read_text().split().count("trip") if self.hook_log.exists() else 0

    def record_event(self, kind, detail=None, t=None, priority=0):
        self.calls.append(("event", kind, self._trips_run()))
        super().record_event(kind, detail, t, priority)

    def record_score(self, t, window_seq, score, verdict, model_version, features=None):
        self.calls.append(("score", int(verdict), self._trips_run()))
        super().record_score(t, window_seq, score, verdict, model_version, features)

    def record_raw(self, t, reason, channels, rate, data):
        self.calls.append(("raw", reason, self._trips_run()))
        super().record_raw(t, reason, channels, rate, data)

    def events(self, kind: str | None = None) -> list[dict]:
        assert self.flush(10)
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT kind, detail FROM events ORDER BY id").fetchall()
        finally:
            db.close()
        return [json.loads(d) for k, d in rows if kind is None or k == kind]


class Rig:
    """One fast path and the real objects around it."""

    def __init__(self, tmp_path: Path, *, inhibit_s: float = 0.0, limit_above: float | None = 50.0,
                 reset_input: str | None = None, on_gap: str = "alarm") -> None:
        bundle = write_bundle(
            tmp_path / "bundle",
            example_manifest(len(NAMES), name="pump", version="1", feature_spec=SPEC.to_dict(),
                             feature_names=list(NAMES), thresholds=THRESHOLDS),
            rms_model(len(NAMES), NAMES.index("ax.rms")), None)
        self.hook_log = tmp_path / "hook.log"
        self.rec = NotingRecorder(tmp_path / "buffer.db", self.hook_log)
        self.metrics = GatewayMetrics(self.rec)
        self.slot = ModelSlot(ModelConfig(bundle=bundle, allow_unsigned=True),
                              DecisionConfig(k=1, n=1), DeployConfig(), SPEC,
                              BundleStore(tmp_path / "bundles"),
                              record_event=lambda k, d: self.rec.record_event(k, d))
        assert self.slot.load(), self.slot.error
        self.mono = Clock()
        self.latch = TripLatch()
        self.watchdog = Watchdog(0.5, clock=self.mono, on_gap=on_gap)
        hook = ActuatorSpec.from_dict({"kind": "command", "argv": [
            "/bin/sh", "-c", f'echo "$SENSORML_ACTION" >> {self.hook_log}']}, key="trip[0]")
        self.resets: list[str] = []
        limits = LimitChecker([HardLimit("ax", above=limit_above)], ("ax",)) \
            if limit_above is not None else None
        self.fast = FastPath(SPEC, models=self.slot, limits=limits, slow_limits=None,
                             watchdog=self.watchdog, latch=self.latch,
                             actuators=[open_actuator(hook)], recorder=self.rec,
                             metrics=self.metrics, reset_input=reset_input,
                             on_reset=self.reset, startup_inhibit_s=inhibit_s,
                             monotonic=self.mono)
        self.seq = 0

    def reset(self, by: str) -> None:
        """What ``Gateway.reset`` does to the fast path's objects."""
        if self.latch.reset():
            self.resets.append(by)
            self.slot.live.decider.reset()
            self.fast.machine_restarted()

    def block(self, amplitude: float = 1.0, *, spike: float | None = None, nan: bool = False,
              quality: Quality = Quality.GOOD, missed: int = 0) -> None:
        """One window's block: :func:`wave` of ``amplitude``, maybe with a spike or NaNs."""
        x = wave(amplitude)
        if spike is not None:
            x[N // 2] = spike
        if nan:
            x[::7] = np.nan
        self.fast.on_fast_block(Block(t0=self.seq * N / SPEC.sample_rate, rate=SPEC.sample_rate,
                                      samples=x.astype(np.float32)[:, None], channels=("ax",),
                                      seq=self.seq, quality=quality,
                                      meta={"missed": missed} if missed else {}))
        self.seq += 1

    def button(self, level: float) -> None:
        self.fast.on_slow_block(Block(t0=0.0, rate=10.0, channels=("reset_btn",),
                                      samples=np.array([[level]], np.float32)))

    def trips_run(self) -> int:
        return self.rec._trips_run()

    def close(self) -> None:
        self.rec.close()
        for a in self.fast.actuators:
            a.close()


@pytest.fixture
def rig(tmp_path):
    made: list[Rig] = []

    def make(**kw) -> Rig:
        r = Rig(tmp_path / str(len(made)), **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def wave(amplitude: float) -> np.ndarray:
    """One window of a 50 Hz sine."""
    return amplitude * np.sin(2 * np.pi * 50 * np.arange(N) / SPEC.sample_rate)


HEALTHY, FAULTY = 1.0, 6.0  # RMS 0.70 (normal), 4.18 (over the trip threshold 3)
FAULTY_RMS = float(np.sqrt(np.mean(wave(FAULTY).astype(np.float32) ** 2)))


# ------------------------------------------------------------------ start-up inhibit
def test_after_start_the_model_alarms_but_does_not_trip_and_limits_still_trip(rig):
    r = rig(inhibit_s=5.0)
    for _ in range(3):
        r.block(FAULTY)
    assert not r.latch.tripped and r.trips_run() == 0
    assert [v for what, v, _ in r.rec.calls if what == "score"] == [Verdict.ALARM] * 3
    (alarm,) = r.rec.events("alarm")  # recorded as an alarm, saying the model would trip
    assert alarm["reason"] == "score 4.182 ≥ trip 3 in 1 of last 1 windows"
    assert alarm["score"] == pytest.approx(FAULTY_RMS, rel=1e-5) and alarm["model_version"] == "1"
    r.block(HEALTHY, spike=80.0)  # over the hard limit (50) while the model is held
    assert r.latch.tripped and r.latch.reason["cause"] == "limit"
    assert r.trips_run() == 1
    (trip,) = r.rec.events("trip")
    assert trip["breaches"] == [{"channel": "ax", "value": 80.0, "limit": 50.0, "kind": "above"}]


def test_the_inhibit_ends_after_its_time_and_a_reset_starts_it_again(rig):
    r = rig(inhibit_s=5.0)
    r.mono.t += 4.99
    r.block(FAULTY)
    assert not r.latch.tripped
    r.mono.t += 0.02  # 5.01 s after start
    r.block(FAULTY)
    assert r.latch.tripped and r.latch.reason["cause"] == "model" and r.trips_run() == 1
    r.reset("operator")
    r.block(FAULTY)  # the machine runs up again: held for another 5 s
    assert not r.latch.tripped and r.trips_run() == 1
    r.mono.t += 5.01
    r.block(FAULTY)
    assert r.latch.tripped and r.trips_run() == 2


def test_without_an_inhibit_the_first_trip_window_trips(rig):
    r = rig(inhibit_s=0.0)
    r.block(FAULTY)
    assert r.latch.tripped and r.latch.reason["cause"] == "model"
    assert r.latch.reason["score"] == pytest.approx(FAULTY_RMS, rel=1e-5)


# ------------------------------------------------------------------ reset input
def test_a_reset_input_resets_on_its_rising_edge_only_not_while_held(rig):
    r = rig(reset_input="reset_btn")
    r.button(0.0)
    r.block(HEALTHY, spike=80.0)
    assert r.latch.tripped
    r.button(0.0)
    assert r.latch.tripped and r.resets == []
    r.button(1.0)  # pressed
    assert not r.latch.tripped and r.resets == ["input reset_btn"]
    r.block(HEALTHY, spike=80.0)  # trips again while the button is still held
    for _ in range(3):
        r.button(1.0)
    assert r.latch.tripped and len(r.resets) == 1  # held: no reset
    r.button(0.2)  # released (below 0.5)
    r.button(0.7)  # pressed again
    assert not r.latch.tripped and len(r.resets) == 2


def test_a_press_while_not_tripped_does_nothing_and_is_not_remembered(rig):
    r = rig(reset_input="reset_btn")
    r.button(0.0)
    r.button(1.0)  # pressed with nothing to reset
    r.button(0.0)
    r.block(HEALTHY, spike=80.0)
    assert r.latch.tripped and r.resets == []  # the earlier press does not lift the new trip


def test_a_reset_input_already_high_at_start_does_not_lift_a_restored_trip(rig):
    """A stuck or held button at start-up is not a press: the first reading is the level
    the edge is measured from."""
    r = rig(reset_input="reset_btn")
    r.latch.trip({"cause": "model", "restored": True}, 1.0)  # as Gateway._restore_latch does
    r.button(1.0)
    r.button(1.0)
    assert r.latch.tripped and r.resets == []
    r.button(0.0)
    r.button(1.0)
    assert not r.latch.tripped and r.resets == ["input reset_btn"]


# ------------------------------------------------------------------ trip before record
def test_the_trip_actuator_fires_before_the_recorder_is_handed_the_window(rig):
    r = rig()
    r.block(HEALTHY)
    r.block(HEALTHY)
    assert r.rec.calls[-2:] == [("score", Verdict.NORMAL, 0), ("raw", "sample", 0)]
    n = len(r.rec.calls)
    r.block(FAULTY)
    # the first call for the tripping window is the trip event, made after the hook ran;
    # then the window's score and its raw samples
    assert r.rec.calls[n:] == [("event", "trip", 1), ("score", Verdict.TRIP, 1),
                               ("raw", "around_alarm", 1)]
    (trip,) = r.rec.events("trip")
    assert trip["cause"] == "model" and trip["actions"][0]["ok"] is True
    assert set(trip["features"]) == set(NAMES)  # added after the stop went out


def test_a_limit_trip_fires_before_its_event_and_before_the_window_is_recorded(rig):
    r = rig()
    r.block(HEALTHY)
    n = len(r.rec.calls)
    r.block(HEALTHY, spike=80.0)
    assert r.rec.calls[n] == ("event", "trip", 1)
    assert all(trips == 1 for _, _, trips in r.rec.calls[n:])


# ------------------------------------------------------------------ sensor faults
def test_nan_samples_leave_the_window_unscored_with_one_sensor_alarm_per_episode(rig):
    r = rig(limit_above=None)  # no hard limit on the channel: the model path alone
    r.block(HEALTHY)
    n = len(r.rec.calls)
    for _ in range(3):
        r.block(HEALTHY, nan=True)
    assert r.metrics.sensor_faults.value == 3
    assert r.rec.calls[n:] == [("event", "alarm", 0)]  # no score, no raw window recorded
    (ev,) = r.rec.events("alarm")
    assert ev["cause"] == "sensor" and ev["window_seq"] == 1
    assert {"ax.mean", "ax.rms"} <= set(ev["bad_features"])
    assert not r.latch.tripped and r.trips_run() == 0  # a NaN sensor alone does not trip
    assert r.slot.live.decider.updates == 1  # the decider never saw the NaN windows
    r.block(HEALTHY)  # the sensor is back: scored again
    assert r.rec.calls[-2][0] == "score"
    r.block(HEALTHY, nan=True)  # a new episode: a new alarm
    assert [e["cause"] for e in r.rec.events("alarm")] == ["sensor", "sensor"]


def test_nan_in_a_limited_channel_trips_as_a_sensor_fault(rig):
    r = rig(limit_above=50.0)
    r.block(HEALTHY, nan=True)
    assert r.latch.tripped and r.latch.reason["cause"] == "limit"
    assert r.latch.reason["breaches"][0]["kind"] == "nan" and r.trips_run() == 1


def test_small_gaps_are_counted_and_a_large_gap_alarms(rig):
    r = rig()
    r.block(HEALTHY, quality=Quality.GAP, missed=3)  # max_gap 8: counted only
    assert r.watchdog.missing == 3 and r.rec.events("alarm") == []
    r.block(HEALTHY, quality=Quality.GAP, missed=20)
    (ev,) = r.rec.events("alarm")
    assert ev["cause"] == "gap" and ev["missing"] == 20 and ev["max_gap"] == 8
    assert not r.latch.tripped and r.metrics.failsafe.value == 1


def test_a_large_gap_trips_when_configured_to(rig):
    r = rig(on_gap="trip")
    r.block(HEALTHY, quality=Quality.GAP, missed=20)
    assert r.latch.tripped and r.latch.reason["cause"] == "gap" and r.trips_run() == 1


def test_silence_past_the_watchdog_timeout_trips_once(rig):
    r = rig()
    r.block(HEALTHY)
    r.mono.t += 0.5  # exactly the timeout: not yet
    r.fast.tick()
    assert not r.latch.tripped
    r.mono.t += 0.01
    r.fast.tick()
    assert r.latch.tripped and r.latch.reason["cause"] == "silence" and r.trips_run() == 1
    r.mono.t += 5.0
    r.fast.tick()
    assert r.trips_run() == 1  # latched: one stop, one event
    (trip,) = r.rec.events("trip")
    assert trip["watchdog"] == "silence" and trip["sample_to_trip_ms"] is None
