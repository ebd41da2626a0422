"""Thresholds from healthy held-out scores for target false-alarm rates.

A rate per day of operation becomes a per-window exceedance probability::

    p = target_per_day · window_period_s / 86 400

(conservative: every window above the threshold counts as one false event; the
decider's k-of-n confirmation and overlapping windows only make real events rarer).
The threshold is the healthy score exceeded with probability ``p``:

- **empirical** when the held-out sample supports it, i.e. at least ``min_exceedances``
  held-out scores are expected above it (``n · p >= min_exceedances``): the
  ``1 - p`` quantile;
- otherwise a **tail fit**: take the top ``tail_share`` of the scores (at least 20)
  above ``u``, fit their excesses over ``u`` and solve ``P(s > t) = ζ · sf(t - u) = p``,
  ζ the share above ``u``. ``tail="auto"`` fits a generalized Pareto distribution
  (scipy, MLE, location 0, shape clipped to [-0.5, 0.3]) when there are at least
  ``min_gpd_tail`` excesses, else an exponential tail (shape 0: fewer excesses cannot
  pin a shape down); ``gpd``/``exponential`` force one; a GPD fit that fails falls back
  to the exponential.

A tail fit is not trusted further than ``max_extrapolation`` × beyond the sample
(p ≥ 1 / (max_extrapolation · n)). When the strictest target asks for more, all three
levels are moved up by the same factor (their ratios kept), the method says so, and the
rates actually reached are written down (``achieved_per_day``): more healthy data is the
fix. Then warn < alarm < trip is enforced (each at least 0.1 % of the healthy spread
above the previous) and trip is never below the largest healthy held-out score.

>>> s = np.random.default_rng(0).exponential(size=20000)
>>> c = calibrate_thresholds(s, window_period_s=60.0, tail="exponential")
>>> round(c.thresholds["warn"], 1), c.per_window["warn"] < 1e-3, c.how["warn"]  # -log p = 7.27
(7.1, True, 'empirical')
>>> round(c.thresholds["trip"], 1), c.how["trip"]  # exact: -log(0.01·60/86400) = 11.9
(11.7, 'exponential tail')
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Calibration", "calibrate_thresholds", "per_window_probability", "DEFAULT_RATES",
           "window_period_from_spec"]

SECONDS_PER_DAY = 86_400.0
#: false events per day of operation: warn, alarm, trip
DEFAULT_RATES = {"warn": 1.0, "alarm": 0.1, "trip": 0.01}
LEVELS = ("warn", "alarm", "trip")
#: fewest excesses for which tail="auto" fits a GPD shape instead of an exponential tail
MIN_GPD_TAIL = 100


@dataclass
class Calibration:
    """Thresholds, how each was found, and the words that go into the manifest."""

    thresholds: dict
    method: str
    per_window: dict
    how: dict
    details: dict = field(default_factory=dict)


def per_window_probability(rate_per_day: float, window_period_s: float) -> float:
    """``rate_per_day · window_period_s / 86400``, the per-window exceedance probability."""
    if rate_per_day <= 0 or window_period_s <= 0:
        raise ValueError("rates and window_period_s must be positive")
    return min(rate_per_day * window_period_s / SECONDS_PER_DAY, 0.5)


def window_period_from_spec(spec: dict) -> float | None:
    """Seconds between successive windows: ``hop / sample_rate`` of a window feature spec,
    or ``window_period_s``/``row_period_s`` of a table spec; ``None`` if unknown."""
    for k in ("window_period_s", "row_period_s", "period_s"):
        v = spec.get(k)
        if isinstance(v, int | float) and v > 0:
            return float(v)
    rate, hop, window = spec.get("sample_rate"), spec.get("hop"), spec.get("window")
    if isinstance(rate, int | float) and rate > 0:
        hop = hop if isinstance(hop, int) and hop > 0 else (window // 2 if isinstance(window, int) else None)
        if hop:
            return hop / float(rate)
    return None


def _gpd_fit(excess: np.ndarray, tail: str) -> tuple[float, float, str]:
    """(shape, scale, name) of the excesses' tail; the exponential is shape 0."""
    excess = np.asarray(excess, np.float64)
    mean = float(excess.mean()) if len(excess) else 0.0
    if tail == "exponential" or len(excess) < 20 or mean <= 0:
        return 0.0, max(mean, 1e-12), "exponential tail"
    from scipy.stats import genpareto

    if tail == "auto" and len(excess) < MIN_GPD_TAIL:
        return 0.0, mean, "exponential tail"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c, _, scale = genpareto.fit(excess, floc=0.0)
    except Exception:  # noqa: BLE001 - optimiser trouble: use the exponential tail
        return 0.0, mean, "exponential tail"
    if not (math.isfinite(c) and math.isfinite(scale) and scale > 0):
        return 0.0, mean, "exponential tail"
    return float(np.clip(c, -0.5, 0.3)), float(scale), "GPD tail"


def _tail_quantile(u: float, zeta: float, shape: float, scale: float, p: float) -> float:
    r = zeta / p  # > 1
    if abs(shape) < 1e-9:
        return u + scale * math.log(r)
    return u + scale / shape * (r ** shape - 1.0)


def calibrate_thresholds(scores: np.ndarray, *, window_period_s: float,
                         rates: dict | None = None, tail: str = "auto",
                         min_exceedances: int = 10, tail_share: float = 0.05,
                         max_extrapolation: float = 100.0) -> Calibration:
    """Warn/alarm/trip for false events per day ``rates`` (default :data:`DEFAULT_RATES`).

    *scores*: healthy held-out scores (as the gateway computes them). *tail*: ``auto``,
    ``gpd``, ``exponential`` (see the module doc) or ``none`` (always the empirical
    quantile, capped at the largest score — optimistic for rare rates).
    """
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if n < 20:
        raise ValueError(f"{n} held-out scores are too few to calibrate thresholds (need 20)")
    if tail not in ("auto", "gpd", "exponential", "none"):
        raise ValueError(f"tail: {tail!r} is not auto, gpd, exponential or none")
    rates = {**DEFAULT_RATES, **(rates or {})}
    med, mx = float(np.median(s)), float(s[-1])
    spread = max(mx - med, 1e-9 * max(abs(mx), 1.0), 1e-12)
    k = max(int(round(tail_share * n)), min(20, n // 2))
    u = float(s[n - k - 1])
    zeta = k / n
    shape, scale, tail_name = _gpd_fit(s[n - k:] - u, tail)
    target = {lv: per_window_probability(float(rates[lv]), window_period_s) for lv in LEVELS}
    p_floor = 1.0 / (max_extrapolation * n) if tail != "none" else 0.0
    factor = max(1.0, p_floor / min(target.values()))
    pw = {lv: min(target[lv] * factor, 0.5) for lv in LEVELS}
    th, how = {}, {}
    for level in LEVELS:
        p = pw[level]
        if tail == "none" or n * p >= min_exceedances:
            th[level] = float(np.quantile(s, 1.0 - p))
            how[level] = "empirical"
        else:
            th[level] = _tail_quantile(u, zeta, shape, scale, min(p, zeta))
            how[level] = tail_name
    step = 1e-3 * spread
    th["alarm"] = max(th["alarm"], th["warn"] + step)
    trip_floor = th["trip"] < mx
    th["trip"] = max(th["trip"], th["alarm"] + step, mx + step)
    achieved = {lv: pw[lv] * SECONDS_PER_DAY / window_period_s for lv in LEVELS}
    words = []
    for level in LEVELS:
        words.append(f"{level} = {th[level]:.6g} (p = {pw[level]:.3g} per window = "
                     f"{achieved[level]:.3g}/day, {how[level]})")
    method = (f"from {n} held-out healthy windows scored by onnxruntime, window period "
              f"{window_period_s:g} s; every window above a threshold counted as a false event; "
              f"targets {rates['warn']:g}/{rates['alarm']:g}/{rates['trip']:g} false "
              "warn/alarm/trip per day; "
              + ("; ".join(words))
              + (f"; the targets need p down to {min(target.values()):.3g}, beyond "
                 f"{max_extrapolation:g}x the {n} held-out windows, so every level was moved "
                 f"up {factor:.3g}x (more healthy data lowers this)" if factor > 1 else "")
              + (f"; tail above u = {u:.6g} (top {zeta:.3g}, {k} scores): shape {shape:.3g}, "
                 f"scale {scale:.3g}" if how["trip"] != "empirical" else "")
              + ("; trip raised to just above the largest healthy score" if trip_floor else "")
              + "; each level at least 0.001 x (max - median) above the previous")
    details = {"holdout_rows": n, "window_period_s": window_period_s, "rates_per_day": rates,
               "target_per_window": target, "per_window_probability": pw,
               "achieved_per_day": achieved, "moved_up_by": factor, "how": how,
               "tail_u": u, "tail_share": zeta, "tail_shape": shape, "tail_scale": scale,
               "holdout_max": mx, "holdout_median": med}
    return Calibration(th, method, pw, how, details)
