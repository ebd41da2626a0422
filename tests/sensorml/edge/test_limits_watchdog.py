"""Hard limits, the watchdog (injected clock) and the latched trip (reset from another thread).

The watchdog's clock is an injected dependency: tests pass a settable fake clock instead
of sleeping.
"""

from __future__ import annotations

import math
import queue
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorml.edge.limits import HardLimit, LimitBreach, LimitChecker, check_limits
from sensorml.edge.watchdog import TripLatch, Watchdog
from sensorml.errors import ConfigError

CH = ("ax", "temperature_c", "pressure_bar")


def block(rows) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------ hard limits
def test_limits_above_and_below_report_the_extreme_value() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0),
                       HardLimit("pressure_bar", above=8.0, below=1.0)], CH)
    assert lc.check(block([[0.1, 60.0, 4.0], [0.2, 89.9, 5.0]])) == []
    got = lc.check(block([[0.1, 60.0, 4.0], [0.2, 93.5, 0.5], [0.0, 91.0, 0.75]]))
    assert got == [LimitBreach("temperature_c", 93.5, 90.0, "above"),
                   LimitBreach("pressure_bar", 0.5, 1.0, "below")]
    assert got[0].message == "temperature_c 93.5 > 90 (above)"
    assert lc.check(block([[0.0, 0.0, 9.0]])) == [LimitBreach("pressure_bar", 9.0, 8.0, "above")]


def test_value_equal_to_the_limit_is_not_a_breach_and_empty_block_is_fine() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0, below=10.0)], CH)
    assert lc.check(block([[0.0, 90.0, 0.0], [0.0, 10.0, 0.0]])) == []
    assert lc.check(np.zeros((0, 3), np.float32)) == []


def test_nan_in_a_limited_channel_trips_by_default() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0)], CH)
    (b,) = lc.check(block([[0.0, 50.0, 0.0], [0.0, math.nan, 0.0]]))
    assert b.channel == "temperature_c" and b.kind == "nan" and math.isnan(b.value)
    assert b.limit == 90.0 and "NaN" in b.message
    # NaN in a channel without limits is not our business
    assert lc.check(block([[math.nan, 50.0, math.nan]])) == []


def test_nan_ignore_checks_the_remaining_samples() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0, below=5.0)], CH, nan="ignore")
    assert lc.check(block([[0.0, 50.0, 0.0], [0.0, math.nan, 0.0]])) == []
    assert lc.check(block([[0.0, math.nan, 0.0]])) == []  # all NaN: nothing to compare
    assert lc.check(block([[0.0, math.nan, 0.0], [0.0, 95.0, 0.0], [0.0, 1.0, 0.0]])) == [
        LimitBreach("temperature_c", 95.0, 90.0, "above"),
        LimitBreach("temperature_c", 1.0, 5.0, "below")]


def test_k_consecutive_samples_counted_across_blocks() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0, k=3)], CH)
    col = lambda *v: block([[0.0, x, 0.0] for x in v])  # noqa: E731
    assert lc.check(col(95, 50, 95, 95)) == []  # runs of 1 and 2
    (b,) = lc.check(col(96, 50))  # the run 95, 95 | 96 spans two blocks
    assert b.kind == "above" and b.value == 96.0
    assert lc.check(col(95, 95, 50, 95)) == []
    assert lc.check(col(95, 95, 95)) != []  # inside one block
    lc.reset()
    assert lc.check(col(95, 95)) == []


def test_unknown_channel_and_wrong_shape_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^limits\[1\]\.channel: 'oil_c' is not a channel "
                                          r"\(ax, temperature_c, pressure_bar\)$"):
        LimitChecker([HardLimit("ax", above=1.0), HardLimit("oil_c", above=1.0)], CH)
    lc = LimitChecker([HardLimit("ax", above=1.0)], CH)
    with pytest.raises(ConfigError, match=r"block has shape \(4, 2\), expected \(n, 3\)"):
        lc.check(np.zeros((4, 2), np.float32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "limit on 't': give 'above' or 'below' (or both)"),
    ({"above": 1.0, "below": 1.0}, "limit on 't': below 1.0 is not below above (1.0)"),
    ({"above": math.nan}, "limit on 't': above: nan is not a finite number"),
    ({"above": 1.0, "k": 0}, "limit on 't': k 0 is not an integer >= 1"),
])
def test_hard_limit_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError) as ei:
        HardLimit("t", **kwargs)
    assert str(ei.value) == message
    with pytest.raises(ConfigError, match="limits.nan: 'stop'"):
        LimitChecker([], CH, nan="stop")


def test_blocks_with_other_channels_check_only_the_limits_they_carry() -> None:
    lc = LimitChecker([HardLimit("temperature_c", above=90.0),
                       HardLimit("current_a", above=20.0)])
    assert lc.check(block([[95.0]]), ("temperature_c",)) == [
        LimitBreach("temperature_c", 95.0, 90.0, "above")]
    assert lc.check(block([[25.0, 1.0]]), ("current_a", "speed_rpm")) == [
        LimitBreach("current_a", 25.0, 20.0, "above")]
    assert check_limits([HardLimit("ax", below=-2.0)], block([[-3.0, 0, 0]]), CH)[0].kind == "below"


def naive(limits, samples, nan_mode):
    """Reference: per limit, per sample, in plain Python."""
    out = []
    for side in ("above", "below"):
        for lim in limits:
            limit = getattr(lim, side)
            if limit is None:
                continue
            col = [float(v) for v in samples[:, CH.index(lim.channel)]]
            if nan_mode == "trip" and any(math.isnan(v) for v in col):
                out.append((lim.channel, "nan"))
                continue
            good = [v for v in col if not math.isnan(v)]
            beyond = [v for v in good if (v > limit if side == "above" else v < limit)]
            if beyond:
                out.append((lim.channel, side, max(beyond) if side == "above" else min(beyond)))
    return out


@settings(max_examples=120, deadline=None)
@given(rows=st.integers(0, 80), nan_mode=st.sampled_from(["trip", "ignore"]), data=st.data())
def test_vectorised_check_matches_a_per_sample_reference(rows, nan_mode, data) -> None:
    values = st.one_of(st.floats(-20, 120, width=32), st.just(math.nan))
    samples = np.array(data.draw(st.lists(st.lists(values, min_size=3, max_size=3),
                                          min_size=rows, max_size=rows)),
                       dtype=np.float32).reshape(rows, 3)
    limits = [HardLimit("temperature_c", above=90.0, below=10.0), HardLimit("ax", above=5.0)]
    got = LimitChecker(limits, CH, nan=nan_mode).check(samples)
    want = naive(limits, samples, nan_mode)
    assert [(b.channel, "nan") if b.kind == "nan" else (b.channel, b.kind, b.value)
            for b in got] == want


def test_long_block_breach_is_found_wherever_it_is() -> None:
    samples = np.zeros((1024, 3), np.float32)
    lc = LimitChecker([HardLimit("pressure_bar", below=-1.0)], CH)
    for row in (0, 511, 1023):
        samples[:] = 0
        samples[row, 2] = -1.5
        assert lc.check(samples) == [LimitBreach("pressure_bar", -1.5, -1.0, "below")]
    samples[700, 2] = np.nan
    assert lc.check(samples)[0].kind == "nan"


# --------------------------------------------------------------- watchdog
def test_watchdog_expires_after_timeout_once_per_silence() -> None:
    clock = FakeClock()
    wd = Watchdog(0.5, clock)
    wd.feed()
    clock.t += 0.5
    assert wd.check() is None  # exactly timeout_s: not yet
    clock.t += 0.01
    ev = wd.check()
    assert ev is not None and ev.cause == "silence" and ev.action == "trip"
    assert ev.detail["silent_s"] == pytest.approx(0.51) and ev.t == clock.t
    clock.t += 5
    assert wd.check() is None  # still silent, but reported once
    assert wd.silent_for() == pytest.approx(5.51)
    wd.feed()
    assert wd.silent_for() == 0.0
    clock.t += 0.6
    assert wd.check() is not None and wd.silences == 2


def test_watchdog_fires_for_a_source_that_never_delivers() -> None:
    clock = FakeClock()
    wd = Watchdog(0.2, clock, on_silence="alarm")
    clock.t += 60  # set-up took long: supervision starts at the first check, not construction
    assert wd.check() is None
    clock.t += 0.25
    ev = wd.check()
    assert ev is not None and ev.action == "alarm"


def test_feed_with_explicit_time() -> None:
    clock = FakeClock(10.0)
    wd = Watchdog(1.0, clock)
    wd.feed(t=9.5)  # the block arrived before the watchdog was told
    assert wd.silent_for() == pytest.approx(0.5)
    clock.t = 10.6
    ev = wd.check()
    assert ev is not None and ev.detail["silent_s"] == pytest.approx(1.1) and wd.feeds == 1


def test_gap_counting_and_max_gap_event() -> None:
    clock = FakeClock()
    wd = Watchdog(1.0, clock, max_gap=8)
    assert wd.note_gap(3) is None and wd.note_gap(8) is None and wd.note_gap(0) is None
    ev = wd.note_gap(9)
    assert ev is not None and ev.cause == "gap" and ev.action == "alarm"
    assert ev.detail == {"missing": 9, "max_gap": 8}
    assert (wd.gaps, wd.missing, wd.gap_events) == (3, 20, 1)


def test_small_gaps_add_up_within_a_gap_window() -> None:
    clock = FakeClock()
    wd = Watchdog(1.0, clock, max_gap=5, gap_window_s=10.0, on_gap="trip")
    for _ in range(5):
        assert wd.note_gap(1) is None
        clock.t += 1
    ev = wd.note_gap(1)
    assert ev is not None and ev.action == "trip" and ev.detail["missing"] == 6
    clock.t += 100  # old gaps leave the window
    assert all(wd.note_gap(1) is None for _ in range(5))


def test_model_failures_event_after_n_consecutive() -> None:
    wd = Watchdog(1.0, FakeClock(), model_failures=3, on_model_failure="trip")
    assert wd.note_model_failure(ValueError("a")) is None
    assert wd.note_model_failure(ValueError("b")) is None
    wd.note_model_ok()  # streak broken
    assert wd.note_model_failure(ValueError("c")) is None
    assert wd.note_model_failure(ValueError("d")) is None
    ev = wd.note_model_failure(RuntimeError("onnx died"))
    assert ev is not None and ev.cause == "model" and ev.action == "trip"
    assert ev.detail == {"failures": 3, "error": "RuntimeError: onnx died"}
    assert wd.note_model_failure(ValueError("e")) is None  # once per streak
    assert wd.model_failure_count == 6 and wd.stats()["model_events"] == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"timeout_s": 0}, "watchdog.timeout: 0 is not a duration > 0 s"),
    ({"timeout_s": 1, "max_gap": 0}, "watchdog.max_gap: 0 is not an integer >= 1"),
    ({"timeout_s": 1, "on_gap": "ignore"}, "watchdog.on_gap: 'ignore' is not one of trip, alarm"),
])
def test_watchdog_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError) as ei:
        Watchdog(**kwargs)
    assert str(ei.value) == message


# ------------------------------------------------------------------ latch
def test_latch_first_cause_wins_later_causes_are_appended() -> None:
    latch = TripLatch(max_causes=3)
    assert not latch.tripped and latch.reason is None
    assert latch.trip({"cause": "limit", "channel": "temperature_c"}, 1.0) is True
    assert latch.trip({"cause": "model", "score": 0.9}, 2.0) is False
    assert latch.trip("silence", 3.0) is False
    assert latch.trip("more", 4.0) is False  # beyond max_causes: counted only
    assert latch.reason == {"cause": "limit", "channel": "temperature_c"}
    assert latch.tripped_at == 1.0
    assert [c for _, c in latch.causes][1:] == [{"cause": "model", "score": 0.9}, "silence"]
    assert latch.snapshot()["causes"] == 4
    assert latch.reset() is True
    assert not latch.tripped and latch.reset() is False
    assert latch.snapshot() == {"tripped": False, "trips": 1, "resets": 1}
    assert latch.trip("model", 7.0) is True  # a new episode, its own first cause
    assert latch.snapshot() == {"tripped": True, "reason": "model", "tripped_at": 7.0,
                                "causes": 1, "trips": 2, "resets": 1}


def test_latch_reset_from_another_thread_while_the_fast_path_keeps_tripping() -> None:
    latch = TripLatch()
    stop = threading.Event()
    latched_by_me: queue.Queue[bool] = queue.Queue()

    def fast_path() -> None:  # keeps computing TRIP verdicts every window
        t = 0.0
        while not stop.is_set():
            t += 1
            if latch.trip({"cause": "model", "t": t}, t):
                latched_by_me.put(True)

    th = threading.Thread(target=fast_path, daemon=True)
    th.start()
    try:
        assert latch.wait(True, timeout=5)
        assert latched_by_me.get(timeout=5)
        resets: queue.Queue[bool] = queue.Queue()
        cli = threading.Thread(target=lambda: resets.put(latch.reset()))
        cli.start()
        cli.join(5)
        assert resets.get(timeout=5) is True
        # the fast path re-latches on its next window: a fresh episode
        assert latched_by_me.get(timeout=5)
    finally:
        stop.set()
        th.join(5)
    assert latch.tripped and latch.resets == 1 and latch.trips >= 2


def test_exactly_one_of_many_concurrent_trips_latches() -> None:
    latch = TripLatch()
    go = threading.Barrier(8)
    wins: queue.Queue[bool] = queue.Queue()

    def worker(i: int) -> None:
        go.wait(5)
        wins.put(latch.trip(f"cause-{i}", float(i)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    results = [wins.get(timeout=5) for _ in range(8)]
    assert results.count(True) == 1
    assert len(latch.causes) == 8 and latch.causes[0][1] == latch.reason
