"""Feature extraction and windowing costs on the fast path.

Prints, for 3 channels × 1024 samples at 25.6 kHz: FeatureExtractor time per window
(p50/p99, median of 5 runs) with and without the envelope spectrum, in a hot loop and
at the real window rate (one window per hop, 10 ms), the reference function for
comparison, and the Windower's cost per pushed block. Run: ``python -m benchmarks features``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from firmware_bridge.block import Block
from sensorml.edge.features import FeatureExtractor, FeatureSpec, SlowWindow, compute_features
from sensorml.edge.windowing import SlowTracker, Windower

FS, N, HOP = 25600.0, 1024, 256


def _pcts(samples_ns: list[int]) -> tuple[float, float]:
    a = np.asarray(samples_ns) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


_SHARE: list[float] = []  # CPU time / wall time of the timed loops


def _runs(fn, calls: int, runs: int = 5, gap_s: float = 0.0) -> tuple[float, float]:
    """Median over runs of (p50, p99) in µs of single calls to ``fn``."""
    p50s, p99s = [], []
    clock = time.perf_counter_ns
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        ts = []
        for _ in range(calls):
            if gap_s:
                time.sleep(gap_s)
            t0 = clock()
            fn()
            ts.append(clock() - t0)
        if not gap_s:
            _SHARE.append((time.process_time() - c0) / (time.perf_counter() - w0))
        p50, p99 = _pcts(ts)
        p50s.append(p50)
        p99s.append(p99)
    return statistics.median(p50s), statistics.median(p99s)


def _line(label: str, p50: float, p99: float, extra: str = "") -> None:
    print(f"  {label:48s} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs {extra}", flush=True)


def bench_extractor() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 3)).astype(np.float32)
    print(f"features of one window, 3 channels × {N} samples at {FS:g} Hz:")
    for env in (False, True):
        spec = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=FS, window=N, hop=HOP,
                           envelope=env)
        ext = FeatureExtractor(spec)
        for _ in range(200):
            ext(x)
        tag = "with envelope" if env else "no envelope"
        p50, p99 = _runs(lambda e=ext: e(x), 3000)
        _line(f"FeatureExtractor, {tag}, hot loop", p50, p99,
              f"({len(spec.names())} features, {1e6 / p50:,.0f} windows/s)")
        p50, p99 = _runs(lambda e=ext: e(x), 100, runs=3, gap_s=HOP / FS)
        _line(f"FeatureExtractor, {tag}, one per {HOP / FS * 1e3:.0f} ms", p50, p99)
        p50, p99 = _runs(lambda s=spec: compute_features(x, s), 100, runs=3)
        _line(f"compute_features (reference), {tag}", p50, p99)
    spec = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=FS, window=N, hop=HOP,
                       slow_channels=("temperature_c", "current_a", "pressure_bar"))
    st = SlowTracker(spec)
    for t in range(60):
        st.push(Block(t0=float(t), rate=1.0, samples=rng.standard_normal((1, 3)).astype(
            np.float32), channels=spec.slow_channels))
    ext = FeatureExtractor(spec)
    sw = st.window()
    p50, p99 = _runs(lambda: ext(x, sw), 3000)
    _line("+ 3 slow channels (60 polls, window cached)", p50, p99)
    fresh = SlowWindow(sw.t, sw.values)
    p50, p99 = _runs(lambda: ext(x, SlowWindow(*fresh)), 1000, runs=3)
    _line("+ 3 slow channels (recomputed every window)", p50, p99)


def bench_windower() -> None:
    print("Windower.push per block (3 channels kept, window 1024, hop 256):")
    rng = np.random.default_rng(1)
    spec = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=FS, window=N, hop=HOP)
    for size, chans in ((1, ("ax", "ay", "az")), (64, ("ax", "ay", "az")),
                        (64, ("t", "az", "ax", "ay")), (256, ("ax", "ay", "az")),
                        (4096, ("ax", "ay", "az"))):
        data = rng.standard_normal((size * 512, len(chans))).astype(np.float32)
        blocks = [Block(t0=i * size / FS, rate=FS, samples=data[i * size:(i + 1) * size],
                        channels=chans, seq=i) for i in range(512)]
        p50s, p99s, per_sample = [], [], []
        for _ in range(5):
            w = Windower(spec)
            ts = []
            for b in blocks:
                t0 = time.perf_counter_ns()
                w.push(b)
                ts.append(time.perf_counter_ns() - t0)
            p50, p99 = _pcts(ts)
            p50s.append(p50)
            p99s.append(p99)
            per_sample.append(sum(ts) / len(data) / 1e3)
        how = "in order" if chans == spec.channels else "picked by name"
        _line(f"{size:5d}-sample blocks, channels {how}", statistics.median(p50s),
              statistics.median(p99s),
              f"({statistics.median(per_sample) * 1e3:.1f} ns/sample, windows included)")


def main() -> None:
    bench_extractor()
    bench_windower()
    share = statistics.median(_SHARE)
    print(f"CPU share of the hot loops: {share:.2f}"
          + (" (other processes competed for the CPU: p99 includes preemption)"
             if share < 0.9 else ""))


if __name__ == "__main__":
    main()
