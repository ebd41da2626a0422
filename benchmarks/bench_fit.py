"""Time to fit + calibrate + export + sign a bundle from 1 M feature rows × 45 features.

The rows are synthetic but healthy-like: a multivariate normal with the mean and
covariance of real healthy windows (the simulated pump through the edge's extractor,
:mod:`training.simdata`), so the features are as correlated as the real ones. The whole
``training.fit.fit_bundle`` runs (split, fit, ONNX export, onnxruntime scoring of the
held-out rows, parity against scikit-learn, calibration, fingerprint, manifest, Ed25519
signature, atomic write); the breakdown times the functions it calls, found by name in
``training.fit`` and wrapped for the run (what is not in them is "other": the split,
hashing the data, the manifest). Target: ≤ 60 s for the default family.

``SENSORML_BENCH_FIT_ALL=1`` times every family, not just the default.

Run: ``.venv/bin/python -m benchmarks fit``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.bench_detection import families
from training import simdata

ROWS = 1_000_000
#: functions of training.fit whose time the breakdown shows (those that exist are wrapped)
STEPS = ("fit_model", "_fit", "iforest_to_onnx", "pca_to_onnx", "export_family", "onnx_scores",
         "reference_scores", "parity", "calibrate", "fingerprint", "write_bundle")


def healthy_like(rows: int = ROWS, seed: int = 0) -> tuple[np.ndarray, simdata.SimRun]:
    base = simdata.healthy_runs(2, 30.0, seed=seed)
    mean, cov = base.X.mean(0, dtype=np.float64), np.cov(base.X.astype(np.float64), rowvar=False)
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(mean, cov, size=rows, method="eigh").astype(np.float32)
    return X, base


@contextmanager
def timed_steps(module, names=STEPS):
    """Wrap ``module.<name>`` for each name present; yields the dict of seconds per name."""
    spent: dict[str, float] = defaultdict(float)
    saved = {}
    for n in names:
        f = getattr(module, n, None)
        if not callable(f):
            continue
        saved[n] = f

        def wrap(*a, _f=f, _n=n, **kw):
            t = time.perf_counter()
            try:
                return _f(*a, **kw)
            finally:
                spent[_n] += time.perf_counter() - t
        setattr(module, n, wrap)
    try:
        yield spent
    finally:
        for n, f in saved.items():
            setattr(module, n, f)


def time_family(family: str, X: np.ndarray, base: simdata.SimRun, key: Path, out: Path) -> None:
    import training.fit as fit

    table = fit.FeatureTable(X, base.names, base.spec.to_dict(), "synthetic-1M")
    with timed_steps(fit) as spent:
        t = time.perf_counter()
        fit.fit_bundle(table, model=family, out=out, key=key, name="bench", version="1")
        total = time.perf_counter() - t
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]))
    other = total - sum(spent.values())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{family:12s} total {total:6.1f} s  (target <= 60 s)  bundle {size / 1024:.0f} KiB")
    print(f"{'':12s} {parts}, other {other:.2f} s  (nested calls count in both)")


def main() -> None:
    from sensorml.bundle import keygen

    t = time.perf_counter()
    X, base = healthy_like()
    print(f"data: {X.shape[0]} rows x {X.shape[1]} features, float32 "
          f"({X.nbytes / 1e6:.0f} MB), multivariate normal with the mean/covariance of "
          f"{len(base.X)} simulated healthy windows [{time.perf_counter() - t:.1f} s to make]")
    fams, default = families()
    run = fams if os.environ.get("SENSORML_BENCH_FIT_ALL") else [default]
    with tempfile.TemporaryDirectory() as d:
        key, _ = keygen(Path(d) / "keys")
        for fam in run:
            mark = " (default)" if fam == default else ""
            print(f"-- {fam}{mark}: fit_bundle(1 M rows), holdout 25 %")
            time_family(fam, X, base, key, Path(d) / f"bundle-{fam}")


if __name__ == "__main__":
    main()
