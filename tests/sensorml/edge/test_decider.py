"""Verdicts from scores: k-of-n debounce, hysteresis, escalation, model faults, validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorml.edge.decider import Decider, Thresholds, Verdict
from sensorml.errors import ConfigError

TH = Thresholds(warn=0.5, alarm=0.6, trip=0.7)  # margin at hysteresis 0.1: 0.02


def verdicts(d: Decider, scores) -> list[Verdict]:
    return [d.update(s).verdict for s in scores]


def changes(vs: list[Verdict]) -> int:
    return sum(a != b for a, b in zip(vs, vs[1:]))


# ------------------------------------------------------------------ k-of-n
def test_enters_when_k_of_last_n_windows_reach_the_level() -> None:
    d = Decider(TH, k=3, n=5)
    hi, lo = 0.8, 0.1
    # trip-level windows at 0, 2, 6: never 3 within 5 windows
    vs = verdicts(d, [hi, lo, hi, lo, lo, lo, hi, lo, lo, lo])
    assert set(vs) == {Verdict.NORMAL}
    # now at 10, 12, 14: the third within the last 5 enters TRIP on that window
    vs = verdicts(d, [hi, lo, hi, lo, hi])
    assert vs == [Verdict.NORMAL] * 4 + [Verdict.TRIP]


def test_leaves_only_when_k_of_n_falls_below_k() -> None:
    d = Decider(TH, k=3, n=5)
    verdicts(d, [0.8] * 5)
    assert d.verdict == Verdict.TRIP
    # far below every threshold: the ring still holds >= 3 trip windows for 2 more windows
    vs = verdicts(d, [0.0] * 4)
    assert vs == [Verdict.TRIP, Verdict.TRIP, Verdict.NORMAL, Verdict.NORMAL]


def test_single_spike_with_k3_does_not_trip() -> None:
    d = Decider(TH, k=3, n=5)
    vs = verdicts(d, [0.1] * 10 + [5.0] + [0.1] * 10)
    assert max(vs) == Verdict.NORMAL
    spike = Decider(TH, k=3, n=5)
    verdicts(spike, [0.1] * 3)
    dec = spike.update(5.0)
    assert dec.raw_level == Verdict.TRIP and dec.verdict == Verdict.NORMAL
    assert dec.reason == "score 5 ≥ trip 0.7 in 1 of last 5 windows (needs 3)"


def test_k1_trips_on_one_window() -> None:
    d = Decider(TH, k=1, n=1)
    assert d.update(0.1).verdict == Verdict.NORMAL
    dec = d.update(0.71)
    assert dec.verdict == Verdict.TRIP
    assert dec.reason == "score 0.71 ≥ trip 0.7 in 1 of last 1 windows"


def test_score_equal_to_threshold_reaches_it() -> None:
    d = Decider(TH, k=1, n=1, hysteresis=0.0)
    assert [d.update(s).raw_level for s in (0.5, 0.6, 0.7)] == [
        Verdict.WARN, Verdict.ALARM, Verdict.TRIP]


# ------------------------------------------------------------- hysteresis
def test_level_is_held_in_the_hysteresis_band_and_left_below_it() -> None:
    d = Decider(TH, k=2, n=3, hysteresis=0.1)  # margin 0.1 * (0.7 - 0.5) = 0.02
    assert d.margin == pytest.approx(0.02)
    verdicts(d, [0.65] * 3)
    assert d.verdict == Verdict.ALARM
    # 0.585 is below alarm (0.6) but within the band [0.58, 0.6): ALARM is held
    vs = verdicts(d, [0.585] * 10)
    assert set(vs) == {Verdict.ALARM}
    dec = d.update(0.585)
    assert dec.reason == "score 0.585 holds alarm (leaves below 0.58); 0 of last 3 windows ≥ 0.6"
    # below the band: leaves ALARM; 0.575 is still >= warn so WARN (entered via k-of-n)
    assert d.update(0.575).verdict == Verdict.WARN


def test_falling_far_steps_down_several_levels_at_once() -> None:
    d = Decider(TH, k=1, n=1)
    assert d.update(0.9).verdict == Verdict.TRIP
    assert d.update(0.0).verdict == Verdict.NORMAL


def test_no_chattering_on_a_score_oscillating_around_a_threshold() -> None:
    rng = random.Random(1)
    # around the alarm threshold, amplitude 0.015 < margin 0.02
    scores = [0.6 + rng.uniform(-0.015, 0.015) for _ in range(2000)]
    with_h = verdicts(Decider(TH, k=1, n=1, hysteresis=0.1), scores)
    without = verdicts(Decider(TH, k=1, n=1, hysteresis=0.0), scores)
    assert changes(with_h) <= 1  # enters ALARM (from NORMAL) and stays
    assert set(with_h[with_h.index(Verdict.ALARM):]) == {Verdict.ALARM}
    assert changes(without) > 500  # what the hysteresis prevents
    # k-of-n alone does not prevent chatter around a threshold either
    assert changes(verdicts(Decider(TH, k=3, n=5, hysteresis=0.0), scores)) > 100
    assert changes(verdicts(Decider(TH, k=3, n=5, hysteresis=0.1), scores)) <= 2


def test_hysteresis_works_with_negative_thresholds() -> None:
    # IsolationForest-style scores: all negative; margin = 0.1 * (0.0 - -0.2) = 0.02
    th = Thresholds(warn=-0.2, alarm=-0.1, trip=0.0)
    d = Decider(th, k=1, n=1, hysteresis=0.1)
    assert d.margin == pytest.approx(0.02)
    assert d.update(-0.09).verdict == Verdict.ALARM
    assert d.update(-0.115).verdict == Verdict.ALARM  # within [-0.12, -0.1)
    assert d.update(-0.125).verdict == Verdict.WARN
    rng = random.Random(2)
    vs = verdicts(d, [-0.1 + rng.uniform(-0.015, 0.015) for _ in range(500)])
    assert changes(vs) <= 1


def test_margin_when_all_thresholds_are_equal_and_explicit_margin() -> None:
    assert Decider(Thresholds(2.0, 2.0, 2.0), hysteresis=0.1).margin == pytest.approx(0.2)
    assert Decider(Thresholds(0.0, 0.0, 0.0), hysteresis=0.1).margin == pytest.approx(0.1)
    assert Decider(TH, margin=0.05).margin == 0.05


# -------------------------------------------------------------- escalation
def test_ramp_escalates_warn_then_alarm_then_trip() -> None:
    d = Decider(TH, k=3, n=5)
    ramp = [i / 100 for i in range(101)]
    vs = verdicts(d, ramp)
    assert all(a <= b for a, b in zip(vs, vs[1:])), "a rising score never lowers the verdict"
    first = {v: vs.index(v) for v in Verdict}
    assert first[Verdict.NORMAL] < first[Verdict.WARN] < first[Verdict.ALARM] < first[Verdict.TRIP]
    # debounced by k=3: each level is entered on the 3rd window at or above its threshold
    assert first[Verdict.WARN] == 52 and first[Verdict.TRIP] == 72


def test_verdict_labels_and_parse() -> None:
    assert [v.label for v in Verdict] == ["normal", "warn", "alarm", "trip"]
    assert Verdict.parse("ALARM") is Verdict.ALARM and Verdict.parse(3) is Verdict.TRIP
    with pytest.raises(ConfigError, match=r"^x: 'stop' is not a verdict"):
        Verdict.parse("stop", "x")


# ------------------------------------------------------------- model fault
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_is_a_model_fault_with_the_fail_safe_verdict(bad: float) -> None:
    d = Decider(TH, k=2, n=3)
    verdicts(d, [0.55] * 3)
    assert d.verdict == Verdict.WARN
    dec = d.update(bad)
    assert dec.model_fault and dec.verdict == Verdict.ALARM  # default fault_verdict
    assert dec.reason.startswith("model fault:")
    assert d.verdict == Verdict.WARN and d.faults == 1  # debounce state untouched
    assert d.update(0.55).verdict == Verdict.WARN and not d.update(0.55).model_fault

    tripper = Decider(TH, fault_verdict="trip")
    assert tripper.update(bad).verdict == Verdict.TRIP
    quiet = Decider(TH, fault_verdict=Verdict.NORMAL)
    assert quiet.update(bad).verdict == Verdict.NORMAL


def test_fault_never_lowers_the_current_verdict() -> None:
    d = Decider(TH, k=1, n=1, fault_verdict="warn")
    d.update(0.9)
    assert d.update(math.nan).verdict == Verdict.TRIP


def test_reset_forgets_history() -> None:
    d = Decider(TH, k=3, n=5)
    verdicts(d, [0.9] * 5)
    d.reset()
    assert d.verdict == Verdict.NORMAL
    assert d.update(0.9).verdict == Verdict.NORMAL


# -------------------------------------------------------------- validation
@pytest.mark.parametrize(("args", "message"), [
    ((0.3, 0.2, 0.9), "thresholds.alarm: 0.2 is below thresholds.warn (0.3)"),
    ((0.3, 0.5, 0.4), "thresholds.trip: 0.4 is below thresholds.alarm (0.5)"),
    ((math.nan, 0.5, 0.6), "thresholds.warn: nan is not a finite number"),
    ((0.1, 0.5, math.inf), "thresholds.trip: inf is not a finite number"),
    ((0.1, "0.5", 0.6), "thresholds.alarm: '0.5' is not a number"),
])
def test_thresholds_validation_names_the_field(args, message) -> None:
    with pytest.raises(ConfigError) as ei:
        Thresholds(*args)
    assert str(ei.value) == message


def test_thresholds_from_manifest_dict_names_the_key() -> None:
    assert Thresholds.from_dict({"warn": 1, "alarm": 2, "trip": 3}) == Thresholds(1, 2, 3)
    with pytest.raises(ConfigError, match=r"^manifest.thresholds: missing trip$"):
        Thresholds.from_dict({"warn": 1, "alarm": 2}, key="manifest.thresholds")
    with pytest.raises(ConfigError, match=r"^m.th.trip: 1 is below m.th.alarm \(2\)$"):
        Thresholds.from_dict({"warn": 1, "alarm": 2, "trip": 1}, key="m.th")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 6, "n": 5}, "decision.k: 6 is larger than decision.n (5)"),
    ({"k": 0}, "decision.k: 0 is not an integer >= 1"),
    ({"n": 2.5}, "decision.n: 2.5 is not an integer >= 1"),
    ({"hysteresis": 1.5}, "decision.hysteresis: 1.5 is not in 0..1"),
    ({"margin": -1.0}, "decision.margin: -1.0 is not a finite number >= 0"),
    ({"fault_verdict": "panic"}, "decision.fault_verdict: 'panic' is not a verdict"),
])
def test_decider_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError) as ei:
        Decider(TH, **kwargs)
    assert str(ei.value).startswith(message)


# ---------------------------------------------------- against a reference
def reference(th: Thresholds, k: int, n: int, margin: float, scores: list[float]) -> list[int]:
    """The documented rule, recomputed from the whole history at every window."""
    t = th.as_tuple()
    raws: list[int] = []
    state, out = 0, []
    for s in scores:
        raws.append(th.level(s))
        last = raws[-n:]
        deb = max([lv for lv in (1, 2, 3) if sum(r >= lv for r in last) >= k], default=0)
        held = [lv for lv in range(1, state + 1) if s >= t[lv] - margin]
        state = max([deb, *held])
        out.append(state)
    return out


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 8), data=st.data(),
    scores=st.lists(st.floats(-0.2, 1.2, allow_nan=False), min_size=1, max_size=80),
    hysteresis=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_incremental_counts_match_the_rule_recomputed_from_history(
        n, data, scores, hysteresis) -> None:
    k = data.draw(st.integers(1, n))
    d = Decider(TH, k=k, n=n, hysteresis=hysteresis)
    got = [int(d.update(s).verdict) for s in scores]
    assert got == reference(TH, k, n, d.margin, scores)


def test_reason_after_the_score_fell_but_the_window_still_holds_the_level() -> None:
    d = Decider(TH, k=2, n=4)
    verdicts(d, [0.8, 0.8])
    dec = d.update(0.1)
    assert dec.verdict == Verdict.TRIP
    assert dec.reason == "2 of last 4 windows ≥ trip 0.7 (score now 0.1)"


def test_numpy_scalars_are_accepted_as_thresholds_and_scores() -> None:
    import numpy as np

    th = Thresholds(np.float32(0.5), np.float64(0.6), np.int64(1))
    assert type(th.warn) is float and th.trip == 1.0
    assert Decider(th, k=1, n=1).update(np.float32(0.55)).verdict == Verdict.WARN
