"""Shadow evaluation with real onnxruntime models: a candidate that behaves is promoted,
one that alarms too often or fails is rolled back with the reason, and the fast path's
``offer`` never blocks or raises whatever the shadow does."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.bundles import example_manifest

from sensorml.bundles.bundle import load_bundle, write_bundle
from sensorml.edge.decider import Decider, Thresholds, Verdict
from sensorml.edge.scorer import Scorer
from sensorml.gateway.shadow import ShadowResult, ShadowRunner

N = 6
TH = Thresholds(warn=0.1, alarm=0.2, trip=0.3)


def linear_onnx(n: int, weight: float, bias: float) -> bytes:
    """score = x · w + b as a real ONNX graph."""
    w = numpy_helper.from_array(np.full((n, 1), weight, np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["score"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def scorer(tmp_path, name: str, weight: float = 0.01, bias: float = 0.0) -> Scorer:
    p = write_bundle(tmp_path / name, example_manifest(N, version=name), linear_onnx(N, weight, bias),
                     None)
    return Scorer(load_bundle(p, trusted_keys=[], allow_unsigned=True))


def run(sc: Scorer, live: list[int], windows: int | None = None, **kw) -> ShadowResult:
    results: list[ShadowResult] = []
    r = ShadowRunner(sc, Decider(TH, k=3, n=5), name="pump", version="2",
                     windows=windows or len(live), on_done=results.append,
                     queue_size=len(live), **kw).start()
    rng = np.random.default_rng(0)
    for v in live:
        x = rng.normal(0, 1, N).astype(np.float32)
        r.offer(x, v)
    assert r.done.wait(10), r.progress()
    assert results == [r.result]
    return r.result


def test_a_candidate_that_behaves_like_the_live_model_is_promoted(tmp_path):
    res = run(scorer(tmp_path, "good"), [Verdict.NORMAL] * 300)
    assert res.promote and res.windows == 300 and res.errors == 0
    assert res.candidate_alarm_rate == 0.0 and "without errors" in res.reason


def test_a_candidate_that_alarms_too_often_is_rolled_back_with_the_rates(tmp_path):
    noisy = scorer(tmp_path, "noisy", weight=0.0, bias=0.25)  # always at alarm level
    res = run(noisy, [Verdict.NORMAL] * 200, max_alarm_rate=0.05)
    assert not res.promote
    assert res.candidate_alarm_rate > 0.95 and res.live_alarm_rate == 0.0 and res.bound == 0.05
    assert "alarm rate 99.0% over 200 windows exceeds the bound 5.0% (live model 0.0%" in res.reason


def test_the_bound_follows_the_live_model_on_a_machine_that_really_is_faulty(tmp_path):
    noisy = scorer(tmp_path, "noisy", weight=0.0, bias=0.25)
    live = [Verdict.ALARM if i % 10 < 6 else Verdict.NORMAL for i in range(200)]  # live 60 %
    assert run(noisy, live, max_alarm_rate=0.05).promote  # 99 % <= 2 x 60 %
    live = [Verdict.ALARM if i % 10 < 3 else Verdict.NORMAL for i in range(200)]  # live 30 %
    res = run(noisy, live, max_alarm_rate=0.05)
    assert not res.promote and abs(res.bound - 0.6) < 1e-9


def test_a_broken_model_is_rolled_back_with_its_error(tmp_path):
    broken = scorer(tmp_path, "nan", weight=0.0, bias=float("nan"))  # loads, scores NaN
    res = run(broken, [Verdict.NORMAL] * 50)
    assert not res.promote and res.errors == 50
    assert res.reason.startswith("50 of 50 windows failed in shadow: ValueError: model returned nan")


def test_a_model_that_raises_counts_as_errors(tmp_path):
    r = ShadowRunner(scorer(tmp_path, "good"), Decider(TH), name="pump", version="2", windows=3).start()
    for _ in range(3):
        r.offer(np.zeros(N + 1, np.float32), Verdict.NORMAL)  # wrong width: ModelError
    assert r.done.wait(10)
    assert not r.result.promote and "expects 6 features, got 7" in r.result.reason


def test_offer_never_blocks_or_raises_and_counts_what_it_skipped(tmp_path):
    r = ShadowRunner(scorer(tmp_path, "good"), Decider(TH), name="pump", version="2", windows=10,
                     queue_size=4)  # not started: nobody takes from the queue
    x = np.zeros(N, np.float32)
    for _ in range(1000):
        r.offer(x, Verdict.NORMAL)
    assert r.q.qsize() == 4 and r.skipped == 996
    r.stop()
    r.offer(object(), "not a verdict")  # after stop: ignored, no exception
    assert r.progress()["scored"] == 0 and r.result is None


def test_stop_abandons_a_run_without_a_decision(tmp_path):
    done: list = []
    r = ShadowRunner(scorer(tmp_path, "good"), Decider(TH), name="pump", version="2", windows=100,
                     on_done=done.append).start()
    r.offer(np.zeros(N, np.float32), Verdict.NORMAL)
    r.stop()
    r._thread.join(5)
    assert not r._thread.is_alive() and done == [] and r.result is None


@pytest.mark.parametrize("bias", [0.0, 0.25])
def test_candidate_verdicts_use_its_own_decider_debounce(tmp_path, bias):
    """k-of-n applies to the candidate too: alarms count only once debounced."""
    res = run(scorer(tmp_path, f"b{bias}", weight=0.0, bias=bias), [Verdict.NORMAL] * 20)
    assert res.candidate_alarm_rate == (0.0 if bias == 0.0 else 18 / 20)
