"""Threshold calibration: false-alarm rates per day in, thresholds that deliver them out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.calibrate import (
    calibrate_thresholds,
    per_window_probability,
    window_period_from_spec,
)


def test_rate_per_day_becomes_a_per_window_probability():
    # 50 windows a second: one false warn a day is one window in 4.32 million
    assert per_window_probability(1.0, 0.02) == pytest.approx(1 / 4.32e6)
    assert window_period_from_spec({"sample_rate": 25600, "window": 1024, "hop": 512}) == 0.02
    assert window_period_from_spec({"sample_rate": 25600, "window": 1024}) == 0.02
    assert window_period_from_spec({"names": ["a"], "row_period_s": 60}) == 60.0
    assert window_period_from_spec({"names": ["a"]}) is None


def test_empirical_quantile_where_the_sample_supports_the_rate():
    """One row a minute, 1/day → p = 1/1440; 200 000 held-out rows expect ~140 above."""
    s = np.random.default_rng(0).exponential(size=200_000)
    c = calibrate_thresholds(s, window_period_s=60.0, rates={"warn": 1.0, "alarm": 0.5,
                                                              "trip": 0.2})
    assert c.how == {"warn": "empirical", "alarm": "empirical", "trip": "empirical"}
    assert c.thresholds["warn"] == pytest.approx(np.log(1440), rel=0.03)
    assert c.thresholds["alarm"] == pytest.approx(np.log(1440 / 0.5), rel=0.03)
    # q(1 - p_trip) = log(7200) = 8.9, but a healthy held-out window must never trip:
    assert c.thresholds["trip"] > s.max() > np.log(7200)
    assert "trip raised to just above the largest healthy score" in c.method
    assert "1/0.5/0.2 false warn/alarm/trip per day" in c.method


@pytest.mark.parametrize(("dist", "tail"), [(stats.expon(), "exponential"),
                                            (stats.genpareto(0.2), "gpd"),
                                            (stats.norm(), "auto")])
def test_tail_fit_reaches_the_target_rate_within_a_small_factor(dist, tail):
    """One window every 5 minutes: 5000 held-out scores show a 1/day warn (p = 3.5e-3)
    but not a 0.01/day trip (p = 3.5e-5); the tail fit extrapolates. The exact exceedance
    probability of each threshold stays within 5x above the target (heavy tails are
    underestimated a little from 250 excesses) and light tails err on the safe side."""
    for seed in (1, 2, 3):
        held = dist.rvs(size=5000, random_state=seed)
        c = calibrate_thresholds(held, window_period_s=300.0, tail=tail)
        assert c.how["warn"] == "empirical" and c.how["trip"] != "empirical"
        for level, rate in (("warn", 1.0), ("alarm", 0.1), ("trip", 0.01)):
            ratio = dist.sf(c.thresholds[level]) / (rate * 300.0 / 86400)
            assert 0.01 < ratio < 5, (level, seed, ratio)
        assert c.thresholds["trip"] > held.max()
        assert "tail above u" in c.method and "shape" in c.method


def test_rates_beyond_the_data_move_every_level_up_and_say_so():
    """50 windows a second and 2000 held-out windows: a 1/day trip target (p = 2e-9) is
    five orders beyond the data; the levels move up together and the manifest says what
    rates they really reach."""
    s = np.random.default_rng(3).normal(size=2000)
    c = calibrate_thresholds(s, window_period_s=0.02)
    assert c.details["moved_up_by"] > 1
    assert c.per_window["trip"] == pytest.approx(1 / (100 * 2000))
    assert c.details["achieved_per_day"]["trip"] > 0.01
    assert "moved up" in c.method and "more healthy data" in c.method
    assert c.thresholds["warn"] < c.thresholds["alarm"] < c.thresholds["trip"]
    assert c.thresholds["trip"] > s.max()


def test_levels_are_ordered_even_for_flat_or_tiny_samples():
    c = calibrate_thresholds(np.full(100, 0.25), window_period_s=1.0)
    assert c.thresholds["warn"] < c.thresholds["alarm"] < c.thresholds["trip"]
    with pytest.raises(ValueError, match="too few"):
        calibrate_thresholds(np.ones(5), window_period_s=1.0)
