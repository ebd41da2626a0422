"""Window features: one definition for the edge and for training.

:func:`compute_features` is the clear reference; :class:`FeatureExtractor` is the fast
path (precomputed Hann window and band matrices, all channels at once) and gives the
same numbers to float32 tolerance. Both compute in float64 and return float32.

Per fast channel, in this order (names ``<channel>.<feature>``):

- ``mean``, ``std`` (population), ``rms``, ``peak`` (max ``|x|``), ``crest`` (peak/rms),
  ``kurtosis`` (*excess*, Fisher, biased: ``m4/m2² - 3``, as ``scipy.stats.kurtosis(x)``),
  ``skew`` (biased ``m3/m2^1.5``, as ``scipy.stats.skew(x)``);
- ``band_i``: ``log10(1e-12 + P)`` where ``P`` is the power of the mean-removed,
  periodic-Hann-windowed signal in band ``i`` (bins with ``lo <= f < hi``; the band
  ending at Nyquist includes it; the DC bin never counts). Power is one-sided and
  scaled so that the sum over all bins is ``Σ(x·w)²/Σw²`` (Parseval): a sine of
  amplitude A contributes about A²/2, so ``P`` is in (unit)²;
- ``dom_freq`` (Hz of the largest non-DC bin), ``centroid`` (power-weighted mean Hz);
- with ``envelope``: ``env_band_i`` (same log power, of the envelope spectrum) and
  ``env_dom_freq`` (largest non-DC envelope bin below the top of ``envelope_bands``,
  where bearing defect frequencies lie). The envelope is the magnitude of the analytic signal of the
  mean-removed window band-passed to ``envelope_band`` (both by FFT masking), and its
  spectrum is taken like the main one (mean removed, Hann, same scale).

A *flat* channel (``std <= 1e-9·peak``, e.g. a stuck sensor) has ``crest`` = 1 (or 0
if all zero), ``kurtosis = skew = 0``, an all-zero spectrum (bands = -12) and
``dom_freq = centroid = 0``; the same rule applies to a flat envelope.

Per slow channel (``<channel>.last``, ``.mean``, ``.slope`` in units per second, least
squares): from the ``slow`` argument, either a :class:`SlowWindow` (explicit times) or
an array ``[m, n_slow]`` of rows ``1/slow_rate`` seconds apart. NaN marks a missing
value and is skipped; a channel needs values at two distinct times for a slope.

Bad input is never turned into finite numbers: :func:`compute_features` raises
:class:`FeatureInputError` on NaN/inf; :class:`FeatureExtractor` returns NaN for every
feature of the affected channel (the gateway treats a non-finite vector as a fault).

>>> spec = FeatureSpec(channels=("ax",), sample_rate=1000.0, window=8, hop=4,
...                    bands=((0, 250), (250, 500)))
>>> spec.names()
('ax.mean', 'ax.std', 'ax.rms', 'ax.peak', 'ax.crest', 'ax.kurtosis', 'ax.skew', 'ax.band_0', 'ax.band_1', 'ax.dom_freq', 'ax.centroid')
>>> x = np.array([[0.0], [1.0], [0.0], [-1.0]] * 2, dtype=np.float32)
>>> dict(zip(spec.names(), compute_features(x, spec).round(3).tolist()))["ax.dom_freq"]
250.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from sensorml.errors import ConfigError, SensormlError

__all__ = [
    "FEATURE_CODE_VERSION", "FeatureSpec", "FeatureInputError", "SlowWindow",
    "compute_features", "FeatureExtractor",
]

#: bump whenever any formula or the order of features changes
FEATURE_CODE_VERSION = "1"

#: the longest window accepted (samples): bounds the extractor's memory (~40 MB at 3 channels)
MAX_WINDOW = 1 << 20
MOMENTS = ("mean", "std", "rms", "peak", "crest", "kurtosis", "skew")
SLOW_FEATURES = ("last", "mean", "slope")
_FLAT = 1e-9  # std <= _FLAT * peak: the channel is flat
_LOG_FLOOR = 1e-12
_TINY = 1e-300  # keeps 0/0 at 0 in the fast path
_TINY_M2 = 1e-150  # floor of m2 in the fast path (flat channels are overwritten anyway)


class FeatureInputError(SensormlError, ValueError):
    """A window or slow block does not fit the spec, or holds NaN/inf."""


class SlowWindow(NamedTuple):
    """Slow-channel samples: ``t`` float64[m] seconds, ``values`` float32[m, n_slow]."""

    t: np.ndarray
    values: np.ndarray


Band = tuple[float, float]


@dataclass(frozen=True)
class FeatureSpec:
    """What the windows are and which features they give (validated at construction;
    a bad value raises :class:`~sensorml.errors.ConfigError` naming ``features.<key>``).

    ``channels`` fast channel names; ``sample_rate`` Hz; ``window``/``hop`` samples
    (hop defaults to window/2); ``bands`` (lo_hz, hi_hz) pairs, default 6 log-spaced
    bands up to Nyquist; ``envelope`` adds the envelope spectrum of ``envelope_band``
    (default 2–5 kHz, kept below Nyquist) in ``envelope_bands`` (default 0–50, 50–150,
    150–300, 300–500 Hz); ``slow_channels`` get level/trend over ``slow_window_s``
    seconds (``slow_rate`` Hz spaces the rows of a plain array passed as ``slow``).
    Defaults without an FFT bin at this window are dropped.
    """

    channels: tuple[str, ...]
    sample_rate: float
    window: int
    hop: int | None = None
    bands: tuple[Band, ...] | None = None
    envelope: bool = False
    envelope_band: Band | None = None
    envelope_bands: tuple[Band, ...] | None = None
    slow_channels: tuple[str, ...] = ()
    slow_window_s: float = 60.0
    slow_rate: float = 1.0

    def __post_init__(self) -> None:
        st = object.__setattr__
        st(self, "channels", _names("channels", self.channels, allow_empty=False))
        st(self, "slow_channels", _names("slow_channels", self.slow_channels, allow_empty=True))
        dup = set(self.channels) & set(self.slow_channels)
        if dup:
            raise ConfigError(f"features.slow_channels: {sorted(dup)} also in channels")
        st(self, "sample_rate", _pos_float("sample_rate", self.sample_rate))
        st(self, "window", _pos_int("window", self.window))
        if self.window < 4:
            raise ConfigError(f"features.window: {self.window} samples is too short "
                              "for a spectrum (at least 4)")
        if self.window > MAX_WINDOW:
            raise ConfigError(f"features.window: {self.window} samples is more than "
                              f"{MAX_WINDOW} (a window of 40 s at 25.6 kHz); use a longer hop "
                              "or slow-channel features for slow trends")
        hop = max(1, self.window // 2) if self.hop is None else _pos_int("hop", self.hop)
        if hop > self.window:
            raise ConfigError(f"features.hop: {hop} is larger than window {self.window} "
                              "(samples between windows would be skipped)")
        st(self, "hop", hop)
        if not isinstance(self.envelope, bool):
            raise ConfigError(f"features.envelope: {self.envelope!r} is not true/false")
        st(self, "slow_window_s", _pos_float("slow_window_s", self.slow_window_s))
        st(self, "slow_rate", _pos_float("slow_rate", self.slow_rate))
        nyq = self.sample_rate / 2
        if self.bands is None:
            st(self, "bands", self._default_bands())
        st(self, "bands", self._check_bands("bands", self.bands))
        if self.envelope and self.envelope_band is None:
            st(self, "envelope_band", (min(2000.0, 0.4 * nyq), min(5000.0, nyq)))
        if self.envelope_band is not None:
            eb = self._check_bands("envelope_band", (self.envelope_band,), single=True)[0]
            if eb[0] <= 0:
                raise ConfigError(f"features.envelope_band: {list(eb)} must start above 0 Hz")
            st(self, "envelope_band", eb)
        if self.envelope and self.envelope_bands is None:
            eb = ((0.0, 50.0), (50.0, 150.0), (150.0, 300.0), (300.0, 500.0))
            eb = tuple((lo, min(hi, nyq)) for lo, hi in eb if lo < nyq)
            st(self, "envelope_bands", tuple(b for b in eb if self._bins(*b).size)
               or ((0.0, nyq),))
        if self.envelope_bands is not None:
            st(self, "envelope_bands", self._check_bands("envelope_bands", self.envelope_bands))

    # ------------------------------------------------------------- helpers
    def _bins(self, lo: float, hi: float) -> np.ndarray:
        """Indices k >= 1 of the rFFT bins with lo <= f_k < hi (hi == Nyquist: inclusive)."""
        f = np.arange(self.window // 2 + 1) * (self.sample_rate / self.window)
        sel = (f >= lo) & ((f < hi) | (f == hi) & (hi >= self.sample_rate / 2))
        sel[0] = False
        return np.flatnonzero(sel)

    def _default_bands(self) -> tuple[Band, ...]:
        nyq = self.sample_rate / 2
        lo = max(nyq / 256, 2 * self.sample_rate / self.window)
        if lo >= nyq:
            return ((0.0, nyq),)
        e = [float(f"{v:.4g}") for v in np.geomspace(lo, nyq, 7)]
        e[-1] = nyq
        bands = tuple((e[i], e[i + 1]) for i in range(6) if self._bins(e[i], e[i + 1]).size)
        return bands or ((0.0, nyq),)

    def _check_bands(self, key: str, bands: Any, single: bool = False) -> tuple[Band, ...]:
        nyq = self.sample_rate / 2
        try:
            out = tuple((float(lo), float(hi)) for lo, hi in bands)
        except (TypeError, ValueError):
            what = "an [lo_hz, hi_hz] pair" if single else "a list of [lo_hz, hi_hz] pairs"
            raise ConfigError(f"features.{key}: {bands[0] if single else bands!r} is not "
                              f"{what}") from None
        if not out:
            raise ConfigError(f"features.{key}: empty (give at least one [lo_hz, hi_hz])")
        for i, (lo, hi) in enumerate(out):
            at = key if single else f"{key}[{i}]"
            if not (0 <= lo < hi <= nyq):
                raise ConfigError(f"features.{at}: [{lo:g}, {hi:g}] Hz is not within "
                                  f"0..{nyq:g} Hz (Nyquist) with lo < hi")
            if not self._bins(lo, hi).size:
                raise ConfigError(
                    f"features.{at}: [{lo:g}, {hi:g}] Hz holds no FFT bin at window "
                    f"{self.window} (bins are {self.sample_rate / self.window:g} Hz apart)")
        return out

    # ---------------------------------------------------------------- public
    def channel_features(self) -> tuple[str, ...]:
        """Feature suffixes computed for every fast channel, in order."""
        f = list(MOMENTS) + [f"band_{i}" for i in range(len(self.bands))] + ["dom_freq",
                                                                               "centroid"]
        if self.envelope:
            f += [f"env_band_{i}" for i in range(len(self.envelope_bands))] + ["env_dom_freq"]
        return tuple(f)

    def names(self) -> tuple[str, ...]:
        """Ordered feature names: fast channels first, then slow channels."""
        per = self.channel_features()
        return tuple(f"{c}.{f}" for c in self.channels for f in per) + tuple(
            f"{c}.{f}" for c in self.slow_channels for f in SLOW_FEATURES)

    def to_dict(self) -> dict:
        """JSON-ready dict (with ``feature_code_version`` and ``names``)."""
        d: dict[str, Any] = {"feature_code_version": FEATURE_CODE_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            d[f.name] = v
        d["names"] = list(self.names())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; also reads a config's ``[features]`` table
        (where ``feature_code_version`` and ``names`` may be absent)."""
        if not isinstance(d, dict):
            raise ConfigError(f"features: expected a table/object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} | {"feature_code_version", "names"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"features: unknown key {unknown[0]!r} "
                              f"(known: {', '.join(sorted(known))})")
        ver = d.get("feature_code_version", FEATURE_CODE_VERSION)
        if str(ver) != FEATURE_CODE_VERSION:
            raise ConfigError(
                f"features.feature_code_version: {ver!r} but this sensorml computes version "
                f"{FEATURE_CODE_VERSION!r}: features differ; retrain the model with this version")
        for k in ("channels", "sample_rate", "window"):
            if k not in d:
                raise ConfigError(f"features.{k}: required")
        kw = {k: v for k, v in d.items() if k not in ("feature_code_version", "names")}
        spec = cls(**kw)
        if "names" in d and list(d["names"]) != list(spec.names()):
            got = list(d["names"])
            diff = sorted(set(got) ^ set(spec.names()))
            raise ConfigError(f"features.names: {len(got)} names recorded but the spec gives "
                              f"{len(spec.names())} (differ: {', '.join(diff[:5]) or 'order'})")
        return spec


def _names(key: str, v: Any, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(v, str) or not hasattr(v, "__iter__"):
        raise ConfigError(f"features.{key}: {v!r} is not a list of names")
    out = tuple(v)
    for i, n in enumerate(out):
        if not isinstance(n, str) or not n.strip():
            raise ConfigError(f"features.{key}[{i}]: {n!r} is not a non-empty name")
    if not out and not allow_empty:
        raise ConfigError(f"features.{key}: empty (name at least one channel)")
    seen = {n for i, n in enumerate(out) if n in out[:i]}
    if seen:
        raise ConfigError(f"features.{key}: {sorted(seen)[0]!r} appears twice")
    return out


def _pos_float(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise ConfigError(f"features.{key}: {v!r} is not a number")
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"features.{key}: {v!r} must be > 0")
    return float(v)


def _pos_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ConfigError(f"features.{key}: {v!r} is not a whole number of samples")
    if v <= 0:
        raise ConfigError(f"features.{key}: {v} must be > 0 samples")
    return int(v)


# ------------------------------------------------------------ shared parts
def hann(n: int) -> np.ndarray:
    """Periodic Hann window (as ``scipy.signal.get_window('hann', n)``)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def power_scale(n: int) -> np.ndarray:
    """Per-bin factor turning ``|rfft(x·w)|²`` into one-sided power (see module doc)."""
    c = np.full(n // 2 + 1, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    return c / (n * float(np.sum(hann(n) ** 2)))


def analytic_gain(spec: FeatureSpec) -> np.ndarray:
    """rFFT-bin gains giving the analytic signal of the band-passed window."""
    n = spec.window
    g = np.zeros(n // 2 + 1)
    k = spec._bins(*spec.envelope_band)
    g[k] = 2.0
    if n % 2 == 0 and g[-1]:
        g[-1] = 1.0
    return g


def _check_window(window: Any, spec: FeatureSpec) -> np.ndarray:
    x = np.asarray(window)
    c = len(spec.channels)
    if x.ndim != 2:
        raise FeatureInputError(f"window has shape {x.shape}, spec expects "
                                f"[{spec.window}, {c}] ({', '.join(spec.channels)})")
    if x.shape[1] != c:
        raise FeatureInputError(f"window has {x.shape[1]} channels, spec expects {c} "
                                f"({', '.join(spec.channels)})")
    if x.shape[0] != spec.window:
        raise FeatureInputError(f"window has {x.shape[0]} samples, spec expects {spec.window}")
    return x


def slow_rows(slow: Any, spec: FeatureSpec) -> SlowWindow:
    """Normalise the ``slow`` argument to a :class:`SlowWindow` (checking its width)."""
    if isinstance(slow, SlowWindow):
        t, v = np.asarray(slow.t, dtype=np.float64), np.asarray(slow.values)
    else:
        v = np.asarray(slow)
        m = v.shape[0] if v.ndim else 0
        t = (np.arange(m) - (m - 1)) / spec.slow_rate
    n = len(spec.slow_channels)
    if v.ndim != 2 or v.shape[1] != n or t.shape != (v.shape[0],):
        raise FeatureInputError(f"slow samples have shape {v.shape}, spec expects [m, {n}] "
                                f"({', '.join(spec.slow_channels)})")
    return SlowWindow(t, v)


def slow_features(slow: Any, spec: FeatureSpec) -> np.ndarray:
    """``last, mean, slope`` per slow channel (NaN where a channel has too few values)."""
    out = np.full((len(spec.slow_channels), 3), np.nan)
    if slow is None:
        return out.ravel()
    t, v = slow_rows(slow, spec)
    t = t - t[-1] if t.size else t
    for j in range(v.shape[1]):
        col = v[:, j].astype(np.float64)
        ok = ~np.isnan(col)
        y, tt = col[ok], t[ok]
        if y.size == 0 or not np.isfinite(y).all():
            continue
        out[j, 0], out[j, 1] = y[-1], y.mean()
        dt = tt - tt.mean()
        sxx = float(dt @ dt)
        if sxx > 0:
            out[j, 2] = float(dt @ (y - out[j, 1])) / sxx
    return out.ravel()


# ------------------------------------------------------------- reference
def _spectrum_feats(d: np.ndarray, spec: FeatureSpec, bands: tuple[Band, ...],
                    top_hz: float | None) -> tuple[list[float], float, float]:
    """(log band powers, dominant Hz, centroid Hz) of a mean-removed 1-D signal."""
    n = d.size
    p = np.abs(np.fft.rfft(d * hann(n))) ** 2 * power_scale(n)
    f = np.fft.rfftfreq(n, 1.0 / spec.sample_rate)
    logs = [math.log10(_LOG_FLOOR + float(p[spec._bins(lo, hi)].sum())) for lo, hi in bands]
    if not p[1:].any():
        return logs, 0.0, 0.0
    last = p.size if top_hz is None else spec._bins(0.0, top_hz)[-1] + 1
    dom = float(f[1 + int(np.argmax(p[1:last]))])
    cen = float((f[1:] * p[1:]).sum() / p[1:].sum())
    return logs, dom, cen


def _channel_reference(x: np.ndarray, spec: FeatureSpec) -> list[float]:
    mean = x.mean()
    d = x - mean
    m2 = np.mean(d * d)
    std, rms, peak = math.sqrt(m2), math.sqrt(np.mean(x * x)), float(np.max(np.abs(x)))
    crest = peak / rms if rms > 0 else 0.0
    flat = std <= _FLAT * peak
    if flat:
        kurt = skew = 0.0
        d = np.zeros_like(d)
    else:
        kurt = np.mean((d * d) * (d * d)) / (m2 * m2) - 3.0
        skew = np.mean(d * d * d) / m2**1.5
    out = [mean, std, rms, peak, crest, kurt, skew]
    logs, dom, cen = _spectrum_feats(d, spec, spec.bands, None)
    out += logs + [dom, cen]
    if spec.envelope:
        z = np.zeros(spec.window, dtype=complex)
        g = analytic_gain(spec)
        z[: g.size] = np.fft.rfft(d) * g
        env = np.abs(np.fft.ifft(z))
        ed = env - env.mean()
        if math.sqrt(np.mean(ed * ed)) <= _FLAT * float(env.max(initial=0.0)):
            ed = np.zeros_like(ed)
        top = max(hi for _, hi in spec.envelope_bands)
        elogs, edom, _ = _spectrum_feats(ed, spec, spec.envelope_bands, top)
        out += elogs + [edom]
    return [float(v) for v in out]


def compute_features(window: np.ndarray, spec: FeatureSpec,
                     slow: np.ndarray | SlowWindow | None = None) -> np.ndarray:
    """Features of one window ``[spec.window, len(spec.channels)]`` → float32[n].

    Raises :class:`FeatureInputError` for a wrong shape, NaN/inf in the window, or slow
    channels without enough values (each needs two samples at distinct times).
    """
    x = _check_window(window, spec).astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        raise FeatureInputError(f"window holds {int(bad[:, j].sum())} NaN/inf value(s) in "
                                f"channel {spec.channels[j]}: its features are undefined")
    out: list[float] = []
    for j in range(x.shape[1]):
        out += _channel_reference(x[:, j], spec)
    if spec.slow_channels:
        if slow is None:
            raise FeatureInputError("spec has slow_channels "
                                    f"({', '.join(spec.slow_channels)}) but no slow samples given")
        s = slow_features(slow, spec).reshape(-1, 3)
        for j, name in enumerate(spec.slow_channels):
            if not np.isfinite(s[j]).all():
                raise FeatureInputError(f"slow channel {name}: needs finite values at two "
                                        "distinct times at least (NaN = missing)")
        out += s.ravel().tolist()
    return np.asarray(out, dtype=np.float32)


# ------------------------------------------------------------- fast path
class FeatureExtractor:
    """``FeatureExtractor(spec)(window, slow=None) -> float32[n]``: the fast path.

    Same numbers as :func:`compute_features` (to float32 tolerance), all channels at
    once, with the Hann window, power scale and band matrices precomputed. A channel
    holding NaN/inf gets NaN for all its features instead of an exception; slow
    features are NaN when ``slow`` is missing or too short. Returns a new array.
    Not thread-safe (scratch buffers are reused): one extractor per thread.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        n, c = spec.window, len(spec.channels)
        self._n, self._c = n, c
        self._per = len(spec.channel_features())
        self._x = np.empty((c, n))
        self._d = np.empty((c, n))
        self._w = np.empty((c, n))
        self._hann = hann(n)
        self._scale = power_scale(n)
        self._freqs = np.fft.rfftfreq(n, 1.0 / spec.sample_rate)
        self._freqs1 = self._freqs[1:]
        self._bands = self._matrix(spec.bands)
        self._nb = len(spec.bands)
        self._slow_key: SlowWindow | None = None
        self._slow_val = np.empty(0)
        if spec.envelope:
            g = analytic_gain(spec)
            k = np.flatnonzero(g)
            self._ek0, self._ek1 = int(k[0]), int(k[-1]) + 1
            self._egain = g[self._ek0:self._ek1]
            self._z = np.zeros((c, n), dtype=complex)
            self._ext = np.empty((c, n // 2 + 3), dtype=complex)
            self._ebands = self._matrix(spec.envelope_bands)
            top = max(hi for _, hi in spec.envelope_bands)
            self._etop = int(spec._bins(0.0, top)[-1]) + 1

    def _matrix(self, bands: tuple[Band, ...]) -> np.ndarray:
        """[bins, len(bands) + 2]: band masks, then f (for the centroid), then 1 (total)."""
        m = np.zeros((self._n // 2 + 1, len(bands) + 2))
        for i, (lo, hi) in enumerate(bands):
            m[self.spec._bins(lo, hi), i] = 1.0
        m[1:, -2] = self._freqs[1:]
        m[1:, -1] = 1.0
        return m

    def _spectrum(self, sp: np.ndarray, mat: np.ndarray, top: int | None,
                  out: np.ndarray, col: int) -> None:
        """From the rFFT of the Hann-windowed signal, write log band powers, dominant Hz
        (and the centroid if ``top`` is None) into ``out[:, col:]``."""
        p = np.abs(sp)
        p *= p
        p *= self._scale
        r = p @ mat
        nb = mat.shape[1] - 2
        r[:, -1] += _TINY
        np.log10(r[:, :nb] + _LOG_FLOOR, out=out[:, col:col + nb])
        out[:, col + nb] = self._freqs1[np.argmax(p[:, 1:top], axis=1)]
        if top is None:
            np.divide(r[:, -2], r[:, -1], out=out[:, col + nb + 1])
        dead = r[:, -1] <= _TINY
        if dead.any():  # flat: all-zero spectrum
            out[dead, col + nb] = 0.0

    def __call__(self, window: np.ndarray, slow: np.ndarray | SlowWindow | None = None
                 ) -> np.ndarray:
        spec, n = self.spec, self._n
        if not (isinstance(window, np.ndarray) and window.shape == (n, self._c)):
            window = _check_window(window, spec)
        x, d, w = self._x, self._d, self._w
        np.copyto(x, window.T)
        out = np.empty((self._c, self._per))
        mean = np.add.reduce(x, axis=1)
        mean /= n
        bad = ~np.isfinite(mean)  # exact: float32 sums cannot overflow in float64
        if bad.any():  # compute on zeros (no warnings), report NaN at the end
            x[bad] = 0.0
            mean[bad] = 0.0
        np.subtract(x, mean[:, None], out=d)
        m2 = np.vecdot(d, d)
        m2 /= n
        std = np.sqrt(m2)
        ms = np.vecdot(x, x)
        ms /= n
        rms = np.sqrt(ms)
        np.abs(x, out=w)
        peak = w.max(axis=1)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = mean, std, rms, peak
        np.divide(peak, np.maximum(rms, _TINY), out=out[:, 4])
        np.multiply(d, d, out=w)
        np.maximum(m2, _TINY_M2, out=m2)
        out[:, 5] = np.vecdot(w, w) / (n * m2 * m2) - 3.0
        out[:, 6] = np.vecdot(w, d) / (n * m2 * np.sqrt(m2))
        flat = std <= _FLAT * peak
        if flat.any():
            out[flat, 5:7] = 0.0
            d[flat] = 0.0
        if spec.envelope:
            sp = np.fft.rfft(d, axis=1)
            self._envelope(sp, out, 9 + self._nb)
            self._spectrum(self._hann_of(sp), self._bands, None, out, 7)
        else:
            np.multiply(d, self._hann, out=w)
            self._spectrum(np.fft.rfft(w, axis=1), self._bands, None, out, 7)
        if bad.any():
            out[bad] = np.nan
        res = out.ravel()
        if spec.slow_channels:
            if slow is None or slow is not self._slow_key:  # SlowTracker reuses its window
                self._slow_key = slow if isinstance(slow, SlowWindow) else None
                self._slow_val = slow_features(slow, spec)
            res = np.concatenate((res, self._slow_val))
        return res.astype(np.float32)

    def _hann_of(self, sp: np.ndarray) -> np.ndarray:
        """rFFT of x·hann from rFFT of x: periodic Hann is the 3-tap [-¼, ½, -¼] in frequency."""
        e = self._ext
        e[:, 1:-1] = sp
        e[:, 0] = sp[:, 1].conj()
        e[:, -1] = sp[:, -2 if self._n % 2 == 0 else -1].conj()
        h = e[:, :-2] + e[:, 2:]
        h *= -0.25
        h += 0.5 * sp
        return h

    def _envelope(self, sp: np.ndarray, out: np.ndarray, col: int) -> None:
        k0, k1, z = self._ek0, self._ek1, self._z
        np.multiply(sp[:, k0:k1], self._egain, out=z[:, k0:k1])
        env = np.abs(np.fft.ifft(z, axis=1))
        emean = np.add.reduce(env, axis=1)
        emean /= self._n
        env -= emean[:, None]
        estd = np.sqrt(np.vecdot(env, env) / self._n)
        eflat = estd <= _FLAT * (env.max(axis=1) + emean)
        if eflat.any():
            env[eflat] = 0.0
        env *= self._hann
        self._spectrum(np.fft.rfft(env, axis=1), self._ebands, self._etop, out, col)
