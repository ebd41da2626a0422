"""Features against independent references (scipy, numpy formulas) and the fast path
against the reference. scipy is only the test's reference; the package never imports it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal as sig
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

from sensorml.edge.features import (
    FEATURE_CODE_VERSION,
    FeatureExtractor,
    FeatureInputError,
    FeatureSpec,
    SlowWindow,
    compute_features,
)
from sensorml.errors import ConfigError

FS = 25600.0
N = 1024


def spec3(**kw) -> FeatureSpec:
    base = dict(channels=("ax", "ay", "az"), sample_rate=FS, window=N, hop=256)
    base.update(kw)
    return FeatureSpec(**base)


def feats(x: np.ndarray, spec: FeatureSpec, slow=None) -> dict[str, float]:
    return dict(zip(spec.names(), compute_features(x, spec, slow).tolist()))


def signals(seed: int = 0) -> np.ndarray:
    """Three channels with different statistics: gaussian + DC, skewed, heavy-tailed."""
    rng = np.random.default_rng(seed)
    return np.stack([
        1.0 + 0.3 * rng.standard_normal(N),
        rng.exponential(0.5, N),
        rng.standard_t(3, N),
    ], axis=1).astype(np.float32)


def periodogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's one-sided Hann periodogram, as power per bin (density × bin width)."""
    f, pxx = sig.periodogram(x, FS, window="hann", detrend="constant", scaling="density")
    return f, pxx * (FS / x.size)


def band_power(f: np.ndarray, p: np.ndarray, lo: float, hi: float) -> float:
    sel = (f >= lo) & ((f < hi) | (f == hi) & (hi == FS / 2))
    sel[0] = False
    return float(p[sel].sum())


# ------------------------------------------------------------------ moments
def test_moments_match_numpy_and_scipy() -> None:
    spec = spec3()
    x = signals()
    got = feats(x, spec)
    for j, c in enumerate(spec.channels):
        v = x[:, j].astype(np.float64)
        rms = np.sqrt(np.mean(v * v))
        assert got[f"{c}.mean"] == pytest.approx(v.mean(), rel=1e-6, abs=1e-7)
        assert got[f"{c}.std"] == pytest.approx(v.std(), rel=1e-6)
        assert got[f"{c}.rms"] == pytest.approx(rms, rel=1e-6)
        assert got[f"{c}.peak"] == pytest.approx(np.abs(v).max(), rel=1e-7)
        assert got[f"{c}.crest"] == pytest.approx(np.abs(v).max() / rms, rel=1e-6)
        assert got[f"{c}.kurtosis"] == pytest.approx(st.kurtosis(v), rel=1e-5)
        assert got[f"{c}.skew"] == pytest.approx(st.skew(v), rel=1e-5, abs=1e-7)
    # the heavy-tailed channel is the one with the large kurtosis
    assert got["az.kurtosis"] > 1.0 > abs(got["ax.kurtosis"])


def test_flat_and_zero_channels_are_defined_not_nan() -> None:
    spec = spec3(envelope=True)
    x = np.zeros((N, 3), np.float32)
    x[:, 0] = 1.5  # stuck sensor
    x[:, 2] = np.random.default_rng(1).standard_normal(N)
    for vec in (compute_features(x, spec), FeatureExtractor(spec)(x)):
        got = dict(zip(spec.names(), vec.tolist()))
        assert np.isfinite(vec).all()
        assert (got["ax.std"], got["ax.crest"], got["ax.kurtosis"], got["ax.skew"]) == (
            0.0, 1.0, 0.0, 0.0)
        assert got["ay.crest"] == 0.0 and got["ay.rms"] == 0.0
        for c in ("ax", "ay"):
            assert got[f"{c}.dom_freq"] == got[f"{c}.centroid"] == got[f"{c}.env_dom_freq"] == 0
            assert got[f"{c}.band_0"] == pytest.approx(-12.0)
            assert got[f"{c}.env_band_0"] == pytest.approx(-12.0)


# ------------------------------------------------------------------ spectrum
def test_bands_dominant_and_centroid_match_scipy_periodogram() -> None:
    spec = spec3(bands=((0, 500), (500, 3000), (3000, 12800)))
    x = signals(2)
    got = feats(x, spec)
    for j, c in enumerate(spec.channels):
        f, p = periodogram(x[:, j].astype(np.float64))
        for i, (lo, hi) in enumerate(spec.bands):
            assert got[f"{c}.band_{i}"] == pytest.approx(
                np.log10(1e-12 + band_power(f, p, lo, hi)), abs=1e-5)
        assert got[f"{c}.dom_freq"] == f[1 + np.argmax(p[1:])]
        assert got[f"{c}.centroid"] == pytest.approx((f[1:] * p[1:]).sum() / p[1:].sum(),
                                                     rel=1e-5)


def test_parseval_band_over_everything_is_the_windowed_mean_square() -> None:
    spec = FeatureSpec(channels=("ax",), sample_rate=FS, window=N, bands=((0, FS / 2),))
    v = signals(3)[:, 1].astype(np.float64)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N) / N)
    d = (v - v.mean()) * w
    total = (d @ d) / (w @ w)
    dc = d.sum() ** 2 / (N * (w @ w))  # the DC bin never counts
    assert 10 ** feats(v[:, None], spec)["ax.band_0"] == pytest.approx(total - dc, rel=1e-5)


@pytest.mark.parametrize("freq", [1000.0, 3325.0, 1234.5, 9000.0])
def test_sine_lands_on_its_frequency_and_in_its_band(freq: float) -> None:
    spec = FeatureSpec(channels=("ax",), sample_rate=FS, window=N)  # default log bands
    t = np.arange(N) / FS
    x = (2.0 * np.sin(2 * np.pi * freq * t) + 0.5).astype(np.float32)[:, None]
    got = feats(x, spec)
    df = FS / N
    assert abs(got["ax.dom_freq"] - freq) <= (0 if freq % df == 0 else df)
    band = next(i for i, (lo, hi) in enumerate(spec.bands) if lo <= freq < hi)
    powers = [got[f"ax.band_{i}"] for i in range(len(spec.bands))]
    assert int(np.argmax(powers)) == band
    if freq % df == 0:  # all the power of an on-bin sine: A²/2
        assert 10 ** powers[band] == pytest.approx(2.0**2 / 2, rel=1e-4)
        assert got["ax.centroid"] == pytest.approx(freq, rel=1e-4)


# ------------------------------------------------------------------ envelope
def envelope_reference(v: np.ndarray, spec: FeatureSpec) -> dict[str, float]:
    """Band-pass by FFT mask, scipy.signal.hilbert, scipy periodogram of the envelope."""
    f = np.fft.rfftfreq(N, 1 / FS)
    lo, hi = spec.envelope_band
    mask = (f >= lo) & ((f < hi) | (f == hi) & (hi == FS / 2))
    mask[0] = False
    bp = np.fft.irfft(np.fft.rfft(v - v.mean()) * mask, N)
    env = np.abs(sig.hilbert(bp))
    fe, pe = periodogram(env)
    out = {f"env_band_{i}": np.log10(1e-12 + band_power(fe, pe, a, b))
           for i, (a, b) in enumerate(spec.envelope_bands)}
    top = max(b for _, b in spec.envelope_bands)
    k = np.flatnonzero((fe > 0) & (fe < top))
    out["env_dom_freq"] = fe[k[np.argmax(pe[k])]]
    return out


def test_envelope_matches_scipy_hilbert_and_finds_the_modulation() -> None:
    spec = spec3(envelope=True)
    assert spec.envelope_band == (2000.0, 5000.0)
    rng = np.random.default_rng(4)
    t = np.arange(N) / FS
    # bearing-like: a 3.2 kHz resonance struck 100 times a second, plus broadband noise
    am = (1 + 0.8 * np.sin(2 * np.pi * 100 * t)) * np.sin(2 * np.pi * 3200 * t)
    x = np.stack([am + 0.05 * rng.standard_normal(N), rng.standard_normal(N),
                  0.3 * np.sin(2 * np.pi * 400 * t)], axis=1).astype(np.float32)
    got = feats(x, spec)
    for j, c in enumerate(spec.channels):
        ref = envelope_reference(x[:, j].astype(np.float64), spec)
        for k, v in ref.items():
            assert got[f"{c}.{k}"] == pytest.approx(v, abs=2e-4), (c, k)
    assert got["ax.env_dom_freq"] == 100.0
    env_bands = [got[f"ax.env_band_{i}"] for i in range(4)]
    assert int(np.argmax(env_bands)) == 1  # 50–150 Hz


def test_envelope_defaults_follow_a_low_sample_rate() -> None:
    spec = FeatureSpec(channels=("ax",), sample_rate=2000.0, window=512, envelope=True)
    assert spec.envelope_band == (400.0, 1000.0)
    assert spec.envelope_bands[-1][1] <= 1000.0
    assert compute_features(np.random.default_rng(0).standard_normal((512, 1)), spec).size == len(
        spec.names())


# ------------------------------------------------------------------ fast path
@pytest.mark.parametrize("kw", [
    {}, {"envelope": True}, {"window": 1000, "hop": 100, "envelope": True},
    {"window": 777, "hop": 777, "bands": ((0, 100), (90, 12800))},
    {"slow_channels": ("temperature_c", "current_a")},
])
def test_extractor_equals_reference(kw: dict) -> None:
    spec = spec3(**kw)
    rng = np.random.default_rng(5)
    ext = FeatureExtractor(spec)
    slow = None
    if spec.slow_channels:
        slow = SlowWindow(np.arange(30.0), rng.standard_normal((30, 2)).astype(np.float32))
    for k in range(4):
        x = (rng.standard_normal((spec.window, 3)) * (1 + k) + k).astype(np.float32)
        x[:, 1] += np.sin(np.arange(spec.window) * 0.7).astype(np.float32)
        ref, fast = compute_features(x, spec, slow), ext(x, slow)
        assert fast.dtype == np.float32 and fast.shape == (len(spec.names()),)
        np.testing.assert_allclose(fast, ref, rtol=2e-6, atol=2e-6)


@settings(max_examples=25, deadline=None)
@given(window=hs.integers(16, 300), rate=hs.sampled_from([1000.0, 8000.0, 44100.0]),
       envelope=hs.booleans(), seed=hs.integers(0, 2**16))
def test_extractor_equals_reference_for_any_shape(window, rate, envelope, seed) -> None:
    spec = FeatureSpec(channels=("a", "b"), sample_rate=rate, window=window, envelope=envelope)
    x = np.random.default_rng(seed).standard_normal((window, 2)).astype(np.float32)
    assert len(spec.names()) == len(set(spec.names()))
    np.testing.assert_allclose(FeatureExtractor(spec)(x), compute_features(x, spec),
                               rtol=5e-6, atol=5e-6)


def test_extractor_returns_fresh_arrays_and_leaves_input_alone() -> None:
    spec = spec3()
    ext = FeatureExtractor(spec)
    x = signals()
    before = x.copy()
    a = ext(x)
    b = ext(signals(9))
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(a, compute_features(x, spec))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_never_gives_finite_features(bad: float) -> None:
    spec = spec3(envelope=True)
    x = signals()
    x[100, 1] = bad
    with pytest.raises(FeatureInputError, match=r"1 NaN/inf value\(s\) in channel ay"):
        compute_features(x, spec)
    got = FeatureExtractor(spec)(x).reshape(3, -1)
    assert np.isnan(got[1]).all()  # the faulty channel, all of its features
    assert np.isfinite(got[[0, 2]]).all()


def test_shape_errors_give_both_numbers() -> None:
    spec = spec3()
    with pytest.raises(FeatureInputError, match=r"window has 2 channels, spec expects 3 \(ax, ay, az\)"):
        compute_features(np.zeros((N, 2), np.float32), spec)
    with pytest.raises(FeatureInputError, match="window has 1000 samples, spec expects 1024"):
        FeatureExtractor(spec)(np.zeros((1000, 3), np.float32))
    with pytest.raises(FeatureInputError, match=r"shape \(1024,\)"):
        compute_features(np.zeros(N, np.float32), spec)


# ------------------------------------------------------------------ slow channels
def test_slow_level_and_trend_match_least_squares() -> None:
    spec = spec3(slow_channels=("temperature_c", "current_a"))
    rng = np.random.default_rng(6)
    t = np.sort(rng.uniform(0, 60, 40)) + 1e6  # irregular polls, large clock values
    temp = 40 + 0.05 * (t - t[0]) + 0.1 * rng.standard_normal(40)
    cur = 12 + rng.standard_normal(40)
    vals = np.stack([temp, cur], axis=1).astype(np.float32)
    vals[[3, 17], 1] = np.nan  # current missing in two polls
    got = feats(signals(), spec, SlowWindow(t, vals))
    assert got["temperature_c.last"] == pytest.approx(vals[-1, 0])
    assert got["temperature_c.mean"] == pytest.approx(vals[:, 0].astype(float).mean(), rel=1e-6)
    assert got["temperature_c.slope"] == pytest.approx(
        np.polyfit(t - t[-1], vals[:, 0].astype(float), 1)[0], rel=1e-4)
    ok = ~np.isnan(vals[:, 1])
    assert got["current_a.mean"] == pytest.approx(vals[ok, 1].astype(float).mean(), rel=1e-6)
    assert got["current_a.slope"] == pytest.approx(
        np.polyfit(t[ok], vals[ok, 1].astype(float), 1)[0], rel=1e-4, abs=1e-7)


def test_plain_slow_array_is_spaced_by_slow_rate() -> None:
    spec = spec3(slow_channels=("temperature_c",), slow_rate=2.0)
    rows = np.arange(10, dtype=np.float32)[:, None]  # +1 per row, rows 0.5 s apart
    assert feats(signals(), spec, rows)["temperature_c.slope"] == pytest.approx(2.0)


def test_missing_slow_samples_raise_in_reference_and_are_nan_in_fast_path() -> None:
    spec = spec3(slow_channels=("temperature_c",))
    with pytest.raises(FeatureInputError, match="slow_channels"):
        compute_features(signals(), spec)
    one = SlowWindow(np.array([5.0]), np.array([[40.0]], np.float32))
    with pytest.raises(FeatureInputError, match="temperature_c: needs finite values"):
        compute_features(signals(), spec, one)
    with pytest.raises(FeatureInputError, match=r"spec expects \[m, 1\]"):
        compute_features(signals(), spec, np.zeros((5, 2), np.float32))
    fast = FeatureExtractor(spec)(signals(), None)
    assert np.isnan(fast[-3:]).all() and np.isfinite(fast[:-3]).all()


# ------------------------------------------------------------------ spec
def test_names_order_and_length() -> None:
    spec = spec3(envelope=True, slow_channels=("temperature_c",))
    names = spec.names()
    assert names[:8] == ("ax.mean", "ax.std", "ax.rms", "ax.peak", "ax.crest", "ax.kurtosis",
                         "ax.skew", "ax.band_0")
    assert "ax.env_band_1" in names and names[-1] == "temperature_c.slope"
    per = 7 + len(spec.bands) + 2 + len(spec.envelope_bands) + 1
    assert len(names) == 3 * per + 3 == len(set(names))
    assert compute_features(signals(), spec, np.ones((5, 1))).shape == (len(names),)


def test_default_bands_are_log_spaced_up_to_nyquist() -> None:
    spec = spec3()
    edges = [lo for lo, _ in spec.bands] + [spec.bands[-1][1]]
    assert len(spec.bands) == 6 and edges[-1] == FS / 2
    ratios = np.diff(np.log(edges))
    assert np.allclose(ratios, ratios[0], rtol=1e-3)
    for rate, window in ((1000.0, 16), (10.0, 1024), (1.0, 64), (1e6, 4096)):
        s = FeatureSpec(channels=("ax",), sample_rate=rate, window=window)
        assert s.bands[-1][1] == rate / 2
        x = np.random.default_rng(0).standard_normal((window, 1))
        assert compute_features(x, s).size == len(s.names())


def test_spec_round_trips_through_json() -> None:
    spec = spec3(envelope=True, slow_channels=("temperature_c",), bands=((10, 100), (100, 900)))
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["feature_code_version"] == FEATURE_CODE_VERSION
    assert d["names"] == list(spec.names())
    assert FeatureSpec.from_dict(d) == spec
    # a config table: no version, no names, lists instead of tuples, defaults filled in
    cfg = FeatureSpec.from_dict({"channels": ["ax", "ay", "az"], "sample_rate": FS,
                                 "window": 1024, "hop": 256})
    assert cfg == spec3()


@pytest.mark.parametrize("change, message", [
    ({"bandz": 1}, "unknown key 'bandz'"),
    ({"feature_code_version": "0"}, r"'0' but this sensorml computes version"),
    ({"names": ["ax.mean"]}, "1 names recorded but the spec gives"),
])
def test_from_dict_refuses_what_it_cannot_honour(change: dict, message: str) -> None:
    d = spec3().to_dict() | change
    with pytest.raises(ConfigError, match=message):
        FeatureSpec.from_dict(d)


def test_from_dict_needs_the_required_keys() -> None:
    with pytest.raises(ConfigError, match="features.window: required"):
        FeatureSpec.from_dict({"channels": ["ax"], "sample_rate": 100.0})


@pytest.mark.parametrize("kw, message", [
    ({"window": 0}, "features.window: 0 must be > 0"),
    ({"window": 3}, "features.window: 3 samples is too short"),
    ({"window": 10.5}, "features.window: 10.5 is not a whole number"),
    ({"hop": 2048}, "features.hop: 2048 is larger than window 1024"),
    ({"hop": 0}, "features.hop: 0 must be > 0"),
    ({"sample_rate": -1.0}, "features.sample_rate: -1.0 must be > 0"),
    ({"sample_rate": "fast"}, "features.sample_rate: 'fast' is not a number"),
    ({"bands": ((0, 20000),)}, r"features.bands\[0\]: \[0, 20000\] Hz is not within 0..12800"),
    ({"bands": ((100, 50),)}, r"features.bands\[0\]: \[100, 50\]"),
    ({"bands": ((1, 10),)}, r"holds no FFT bin at window 1024 \(bins are 25 Hz apart\)"),
    ({"bands": ()}, "features.bands: empty"),
    ({"channels": ("ax", "ax")}, "features.channels: 'ax' appears twice"),
    ({"channels": ("ax", "")}, r"features.channels\[1\]: '' is not a non-empty name"),
    ({"channels": ()}, "features.channels: empty"),
    ({"channels": "ax"}, "features.channels: 'ax' is not a list"),
    ({"slow_channels": ("ax",)}, r"features.slow_channels: \['ax'\] also in channels"),
    ({"envelope": "yes"}, "features.envelope: 'yes' is not true/false"),
    ({"envelope": True, "envelope_band": (0, 3000)}, "must start above 0 Hz"),
    ({"envelope": True, "envelope_band": (1, 2, 3)}, r"envelope_band: \(1, 2, 3\) is not an \[lo"),
    ({"envelope": True, "envelope_band": (9000, 14000)}, r"envelope_band: \[9000, 14000\] Hz"),
])
def test_validation_names_the_key_and_value(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec3(**kw)


def test_spec_is_frozen_and_hashable() -> None:
    spec = spec3()
    with pytest.raises(AttributeError):
        spec.window = 5  # type: ignore[misc]
    assert hash(spec) == hash(spec3())


def test_envelope_finds_the_simulated_outer_race_defect() -> None:
    """End to end with the simulated pump: an outer-race defect shows in the envelope
    spectrum at the bearing's BPFO, and its envelope band power rises far above healthy."""
    from firmware_bridge.sim.machine import Machine

    spec = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=FS, window=4096, hop=4096,
                       envelope=True)
    ext = FeatureExtractor(spec)

    def run(fault: str | None) -> tuple[dict[str, np.ndarray], float]:
        m = Machine("pump", rate=FS, seed=3)
        if fault:
            m.inject(fault, severity=1.0, ramp_s=0.0)
        x = m.generate(int(FS))
        rows = np.array([ext(x[i:i + 4096]) for i in range(0, len(x) - 4095, 4096)])
        return dict(zip(spec.names(), rows.T)), m.defect_frequencies()["bpfo"]

    healthy, _ = run(None)
    faulty, bpfo = run("outer_race")
    band = next(i for i, (lo, hi) in enumerate(spec.envelope_bands) if lo <= bpfo < hi)
    assert abs(np.median(faulty["ax.env_dom_freq"]) - bpfo) <= FS / 4096
    assert np.median(faulty[f"ax.env_band_{band}"] - healthy[f"ax.env_band_{band}"]) > 2.0
    assert np.median(faulty["ax.kurtosis"]) > 1.0 > abs(np.median(healthy["ax.kurtosis"]))
