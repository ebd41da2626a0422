"""µs per call of the decision path: Decider.update, LimitChecker.check, Watchdog, TripLatch.

Each figure is per call, timed call by call with ``perf_counter_ns`` (p50/p99 over all
calls; the medians of 5 runs of those are printed). Timer overhead (~0.1 µs) is included.
Run: ``python -m benchmarks decide``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from sensorml.edge.decider import Decider, Thresholds
from sensorml.edge.limits import HardLimit, LimitChecker
from sensorml.edge.watchdog import TripLatch, Watchdog

RUNS = 5


def _percentiles(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    ns = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = ns()
        fn(i)
        out[i] = ns() - t0
    return float(np.percentile(out, 50)) / 1e3, float(np.percentile(out, 99)) / 1e3


def _report(name: str, fn_factory: Callable[[], Callable[[int], object]], calls: int) -> None:
    p50s, p99s = [], []
    for _ in range(RUNS):
        p50, p99 = _percentiles(fn_factory(), calls)
        p50s.append(p50)
        p99s.append(p99)
    print(f"{name:<52} p50 {statistics.median(p50s):7.2f} µs   p99 {statistics.median(p99s):7.2f} µs"
          f"   ({calls} calls x {RUNS} runs)", flush=True)


def main() -> None:
    rng = np.random.default_rng(0)
    th = Thresholds(0.5, 0.6, 0.7)
    scores = (rng.normal(0.45, 0.1, 200_000)).tolist()  # crosses every threshold

    def decider(k: int, n: int) -> Callable[[], Callable[[int], object]]:
        def make() -> Callable[[int], object]:
            d = Decider(th, k=k, n=n)
            return lambda i: d.update(scores[i])
        return make

    _report("Decider.update k=3 n=5", decider(3, 5), 100_000)
    _report("Decider.update k=10 n=30", decider(10, 30), 100_000)

    def decider_reason() -> Callable[[int], object]:
        d = Decider(th)
        return lambda i: d.update(scores[i]).reason
    _report("Decider.update + .reason (text built)", decider_reason, 50_000)

    ch = ("ax", "ay", "az")
    slow_ch = ("temperature_c", "current_a", "pressure_bar", "speed_rpm")
    fast = rng.normal(0, 1, (1024, 3)).astype(np.float32)
    slow = np.array([[60.0, 12.0, 4.0, 1480.0]], dtype=np.float32)
    hot = slow.copy()
    hot[0, 0] = 95.0

    def checker(limits, chans, data) -> Callable[[], Callable[[int], object]]:
        def make() -> Callable[[int], object]:
            lc = LimitChecker(limits, chans)
            return lambda i: lc.check(data)
        return make

    vib = [HardLimit(c, above=8.0, below=-8.0) for c in ch]
    _report("LimitChecker.check 1024x3, 3 two-sided limits", checker(vib, ch, fast), 20_000)
    vib_k = [HardLimit(c, above=8.0, below=-8.0, k=3) for c in ch]
    _report("LimitChecker.check 1024x3, 3 two-sided limits k=3", checker(vib_k, ch, fast), 5_000)
    slow_l = [HardLimit("temperature_c", above=90.0), HardLimit("pressure_bar", below=1.0)]
    _report("LimitChecker.check 1x4 slow block, no breach", checker(slow_l, slow_ch, slow), 50_000)
    _report("LimitChecker.check 1x4 slow block, 1 breach", checker(slow_l, slow_ch, hot), 50_000)

    def watchdog() -> Callable[[int], object]:
        wd = Watchdog(0.5)

        def call(i: int) -> object:
            wd.feed()
            return wd.check()
        return call
    _report("Watchdog.feed + check", watchdog, 100_000)

    def latch() -> Callable[[int], object]:
        la = TripLatch()
        la.trip("first", 0.0)
        return lambda i: la.trip({"cause": "model"}, float(i))
    _report("TripLatch.trip while latched", latch, 100_000)


if __name__ == "__main__":
    main()
