"""Labelled simulated runs as feature matrices, made with the edge's own extractor.

The simulator (:class:`firmware_bridge.sim.machine.Machine`) is driven directly with
``generate`` — no real time, no processes — and every window is turned into features by
:class:`sensorml.edge.features.FeatureExtractor`, exactly as the gateway does. Used by the
detection benchmark, the notebooks and the tests.

- :func:`operating_schedule`: seeded speed/load set-point changes (speed within ±10 % of
  nominal, load 0.4–1.0, 3–15 s ramps, like the simulator's ``auto`` schedule but denser,
  so a short training run sees the whole operating envelope);
- :func:`simulate`: one run with a schedule and scheduled faults → :class:`SimRun`
  (features, window end times, labels, slow values per window);
- :func:`healthy_runs`: several healthy runs with speed and load changes, stacked;
- :func:`fault_run`: healthy for ``before_s``, then one fault from a known start;
- :func:`day_segments`: short healthy segments around the set-point changes of a long
  ``auto`` schedule (a day of operation sampled where it is hardest: the transitions);
- :func:`zscore_bundle`: a small signed bundle fitted on a healthy run without the
  training stack (mean squared z-score, a 4-node ONNX graph): the model the soak, the
  fault suite and the scoring benchmarks share.

>>> run = simulate(0.5, seed=1, faults=[FaultEvent("imbalance", at=0.25)])
>>> run.X.shape, run.X.dtype, int(run.label.sum()) > 0
((24, 45), dtype('float32'), True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.sim.faults import FaultEvent
from firmware_bridge.sim.machine import SLOW_CHANNELS, Machine
from firmware_bridge.sim.process import PROFILES
from firmware_bridge.sim.schedule import SetPoint, auto_schedule
from sensorml.edge.features import FeatureExtractor, FeatureSpec

__all__ = ["DEFAULT_SPEC", "SimRun", "default_spec", "operating_schedule", "simulate",
           "healthy_runs", "fault_run", "day_segments", "stack", "zscore_bundle"]

#: the gateway's default windows on the simulated pump: 3 axes, 25.6 kHz, 40 ms windows
DEFAULT_SPEC = {"channels": ["ax", "ay", "az"], "sample_rate": 25600.0, "window": 1024, "hop": 512}


def default_spec(**overrides) -> FeatureSpec:
    """The gateway's default feature spec for the simulated pump (45 features).

    >>> len(default_spec().names()), default_spec(envelope=True).envelope
    (45, True)
    """
    return FeatureSpec.from_dict({**DEFAULT_SPEC, **overrides})


@dataclass
class SimRun:
    """Features of one simulated run.

    ``X`` float32 [windows, features]; ``t`` window end times (s, machine time); ``label``
    True where the window holds any faulty sample; ``slow`` the slow values
    (:data:`SLOW_CHANNELS`) at each window's end; ``signal`` the raw samples when asked.
    """

    X: np.ndarray
    t: np.ndarray
    label: np.ndarray
    slow: np.ndarray
    spec: FeatureSpec
    fault: str | None = None
    fault_at: float | None = None
    seconds: float = 0.0
    signal: np.ndarray | None = field(default=None, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names()

    @property
    def window_s(self) -> float:
        return self.spec.window / self.spec.sample_rate

    def full_fault(self) -> np.ndarray:
        """Windows lying wholly after the fault start (all their samples faulty)."""
        if self.fault_at is None:
            return np.zeros(len(self.t), bool)
        return self.t - self.window_s >= self.fault_at - 1e-9

    def temperature(self) -> np.ndarray:
        return self.slow[:, SLOW_CHANNELS.index("temperature_c")]

    def table(self, source: str = "simulated"):
        """As a :class:`training.fit.FeatureTable` (rows, names, spec dict)."""
        from training.fit import FeatureTable

        return FeatureTable(self.X, self.names, self.spec.to_dict(), source)


def operating_schedule(seed: int, duration_s: float, *, every_s: tuple[float, float] = (4.0, 12.0),
                       profile: str = "pump", speed_span: float = 0.1,
                       load: tuple[float, float] = (0.4, 1.0)) -> list[SetPoint]:
    """Speed/load changes every ``every_s`` seconds, within the ``auto`` schedule's range.

    >>> s = operating_schedule(3, 30.0); len(s) > 2, all(0.4 <= p.load <= 1.0 for p in s)
    (True, True)
    """
    rng = np.random.default_rng([seed, 0x0FE7])
    nominal = PROFILES[profile].rpm
    out: list[SetPoint] = []
    t = float(rng.uniform(0.0, every_s[0]))
    while t < duration_s:
        rpm = float(nominal * rng.uniform(1 - speed_span, 1 + speed_span))
        out.append(SetPoint(t, rpm=rpm, load=float(rng.uniform(*load)),
                            ramp_s=float(rng.uniform(1.0, min(8.0, every_s[1])))))
        t += float(rng.uniform(*every_s))
    return out


def simulate(seconds: float, *, seed: int = 0, spec: FeatureSpec | None = None,
             schedule: Sequence[SetPoint] = (), faults: Sequence[FaultEvent] = (),
             profile: str = "pump", rpm: float | None = None, load: float = 0.75,
             keep_signal: bool = False, chunk_s: float = 1.0) -> SimRun:
    """Run the simulated machine for ``seconds`` and compute each window's features.

    Windows are ``spec.window`` samples every ``spec.hop``; the machine runs at
    ``spec.sample_rate`` with the spec's channels (a subset of ax, ay, az). Generation
    goes chunk by chunk (the machine's output does not depend on chunking).
    """
    spec = spec or default_spec()
    cols = [Machine.channels.index(c) for c in spec.channels]
    m = Machine(profile, rate=spec.sample_rate, seed=seed, rpm=rpm, load=load,
                schedule=list(schedule), faults=list(faults))
    ext = FeatureExtractor(spec)
    rate, win, hop = spec.sample_rate, spec.window, spec.hop
    total = int(round(seconds * rate))
    chunk = max(hop, int(chunk_s * rate) // hop * hop)
    rows, ends, slows, kept = [], [], [], []
    buf = np.empty((0, len(cols)), np.float32)
    start = 0  # absolute sample index of buf[0]
    done = 0
    while done < total:
        n = min(chunk, total - done)
        # step in hops so the slow values are sampled once per window end
        parts = []
        for k in range(0, n, hop):
            parts.append(m.generate(min(hop, n - k))[:, cols])
            slows.append((done + k + len(parts[-1]), list(m.slow_values().values())))
        x = np.concatenate(parts)
        if keep_signal:
            kept.append(x)
        done += n
        buf = np.concatenate((buf, x))
        i = 0
        while i + win <= len(buf):
            rows.append(ext(buf[i:i + win]))
            ends.append(start + i + win)
            i += hop
        buf = buf[i:]
        start += i
    spec_n = len(spec.names())
    X = np.vstack(rows).astype(np.float32) if rows else np.empty((0, spec_n), np.float32)
    end_idx = np.asarray(ends, np.int64)
    slow_at = np.asarray([s[0] for s in slows], np.int64)
    slow_v = np.asarray([s[1] for s in slows], np.float64).reshape(-1, len(SLOW_CHANNELS))
    pick = np.clip(np.searchsorted(slow_at, end_idx), 0, max(len(slow_at) - 1, 0))
    t = end_idx / rate
    first = min((f.at for f in faults), default=None)
    label = t > first if first is not None else np.zeros(len(t), bool)
    name = faults[0].fault if faults else None
    return SimRun(X, t, label, slow_v[pick] if len(slow_v) else np.empty((0, 4)), spec,
                  name, first, seconds, np.concatenate(kept) if keep_signal else None)


def stack(runs: Iterable[SimRun]) -> SimRun:
    """Concatenate runs (times are kept per run, not shifted)."""
    runs = list(runs)
    return SimRun(np.vstack([r.X for r in runs]), np.concatenate([r.t for r in runs]),
                  np.concatenate([r.label for r in runs]), np.vstack([r.slow for r in runs]),
                  runs[0].spec, seconds=sum(r.seconds for r in runs))


def healthy_runs(n_runs: int = 4, seconds: float = 60.0, *, seed: int = 0,
                 spec: FeatureSpec | None = None, profile: str = "pump") -> SimRun:
    """``n_runs`` healthy runs with speed and load changes (seeds ``seed`` … ``seed+n-1``)."""
    return stack(simulate(seconds, seed=seed + i, spec=spec, profile=profile,
                          schedule=operating_schedule(seed + i, seconds, profile=profile))
                 for i in range(n_runs))


def fault_run(fault: str, *, seed: int = 100, before_s: float = 10.0, after_s: float = 20.0,
              severity: float = 1.0, ramp_s: float = 0.0, spec: FeatureSpec | None = None,
              profile: str = "pump", load: float = 0.75, keep_signal: bool = False) -> SimRun:
    """Healthy for ``before_s`` (with a speed/load change), then ``fault`` from ``before_s``.

    The set-point changes happen before the fault only, so a detection after it is the
    fault's doing, not a transient's.
    """
    nominal = PROFILES[profile].rpm
    sched = [SetPoint(before_s * 0.3, rpm=nominal * 0.95, load=min(1.0, load + 0.1), ramp_s=2.0),
             SetPoint(before_s * 0.6, rpm=nominal, load=load, ramp_s=2.0)]
    return simulate(before_s + after_s, seed=seed, spec=spec, schedule=sched, profile=profile,
                    load=load, faults=[FaultEvent(fault, at=before_s, severity=severity,
                                                  ramp_s=ramp_s)],
                    keep_signal=keep_signal)


@dataclass(frozen=True)
class DayPlan:
    """Where :func:`day_segments` cuts its segments out of a long ``auto`` schedule."""

    hours: float
    changes: int
    segments: int
    seconds: float
    every: int

    def describe(self) -> str:
        return (f"{self.hours:g} h of the simulator's `auto` schedule ({self.changes} speed/load "
                f"changes, every 20-60 s, speed ±10 %, load 0.4-1.0, 3-15 s ramps); simulated "
                f"{self.segments} segments of {self.seconds:g} s, each starting 2 s before every "
                f"{self.every}th set-point change (so it holds the ramp and the settled state "
                f"after it) = {self.segments * self.seconds / 60:.0f} min of signal at full "
                "rate; the decider restarts at each segment")


def day_plan(hours: float = 24.0, *, seed: int = 7, every: int = 8, seconds: float = 12.0,
             profile: str = "pump") -> tuple[DayPlan, list[tuple[float, SetPoint, SetPoint]]]:
    """The segments of :func:`day_segments`: (segment start s, state before, the change)."""
    sched = auto_schedule(seed, PROFILES[profile].rpm, hours * 3600.0)
    p = PROFILES[profile]
    prev = SetPoint(0.0, rpm=p.rpm, load=0.75)
    picks = []
    for i, sp in enumerate(sched):
        if i % every == every // 2:
            picks.append((sp.at - 2.0, prev, sp))
        prev = SetPoint(sp.at, rpm=sp.rpm if sp.rpm is not None else prev.rpm,
                        load=sp.load if sp.load is not None else prev.load)
    return DayPlan(hours, len(sched), len(picks), seconds, every), picks


def day_segment(i: int, start: float, before: SetPoint, change: SetPoint, seconds: float,
                spec: FeatureSpec | None = None, seed: int = 7) -> SimRun:
    """One healthy segment: steady at ``before`` for 2 s, then ``change`` (relative time)."""
    sp = SetPoint(2.0, rpm=change.rpm, load=change.load, ramp_s=change.ramp_s)
    run = simulate(seconds, seed=seed * 100_003 + i, spec=spec, rpm=before.rpm, load=before.load,
                   schedule=[sp])
    run.t = run.t + start
    return run


def day_segments(hours: float = 24.0, *, seed: int = 7, every: int = 8, seconds: float = 12.0,
                 spec: FeatureSpec | None = None) -> Iterator[SimRun]:
    """Healthy segments around the set-point changes of ``hours`` of ``auto`` schedule."""
    _, picks = day_plan(hours, seed=seed, every=every, seconds=seconds)
    for i, (start, before, change) in enumerate(picks):
        yield day_segment(i, start, before, change, seconds, spec, seed)


def zscore_bundle(out: Path, key: Path | None, *, rate: float = 25600.0, window: int = 1024,
                  hop: int = 512, seconds: float = 6.0, seed: int = 3, version: str = "1",
                  name: str = "pump") -> Path:
    """A small signed bundle: the mean squared z-score of the edge's own features over
    ``seconds`` of healthy simulated pump, as a 4-node ONNX graph (needs ``onnx``, not
    scikit-learn). Signed with ``key`` (None: unsigned); returns the bundle's path.

    Thresholds come from the healthy scores: warn at 3x their 99.9th percentile, alarm
    4x, trip 6x; a developed bearing fault scores far above that.
    """
    import onnx
    from onnx import TensorProto, helper

    from sensorml.bundles.bundle import write_bundle

    spec = default_spec(sample_rate=rate, window=window, hop=hop)
    X = simulate(seconds, seed=seed, spec=spec).X
    mu = X.mean(axis=0).astype(np.float32)
    sd = np.maximum(X.std(axis=0), 1e-6 * np.maximum(np.abs(mu), 1.0)).astype(np.float32)
    n = X.shape[1]
    g = helper.make_graph(
        [helper.make_node("Sub", ["x", "mu"], ["d"]), helper.make_node("Div", ["d", "sd"], ["z"]),
         helper.make_node("Mul", ["z", "z"], ["z2"]),
         helper.make_node("ReduceMean", ["z2"], ["score"], axes=[1], keepdims=1)],
        "zscore", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor("mu", TensorProto.FLOAT, [n], mu.tolist()),
         helper.make_tensor("sd", TensorProto.FLOAT, [n], sd.tolist())])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    healthy = (((X - mu) / sd) ** 2).mean(axis=1)
    top = float(np.quantile(healthy, 0.999))
    manifest = {
        "name": name, "version": version, "feature_spec": spec.to_dict(),
        "feature_names": list(spec.names()), "input_name": "x", "output_name": "score",
        "thresholds": {"warn": 3 * top, "alarm": 4 * top, "trip": 6 * top},
        "threshold_method": "multiples of the healthy 99.9th percentile (z-score model)",
        "fingerprint": {}, "metrics": {}, "model_family": "zscore", "n_features": n,
        "training": {"rows": int(len(X)), "fitted_at": "1970-01-01T00:00:00Z",
                     "data_sha256": ""},
    }
    return write_bundle(out, manifest, model.SerializeToString(), key)
