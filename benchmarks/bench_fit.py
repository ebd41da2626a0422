"""Time to fit + calibrate + export + sign a bundle from 1 M feature rows × 45 features.

The rows are synthetic but healthy-like: a multivariate normal with the mean and
covariance of real healthy windows (the simulated pump through the edge's extractor,
:mod:`training.simdata`), so the features are as correlated as the real ones. The whole
``training.fit.fit_bundle`` runs (split, fit, ONNX export, onnxruntime scoring of the
held-out rows, parity against scikit-learn, calibration, fingerprint, manifest, Ed25519
signature, atomic write); the breakdown is ``FitResult.timings`` (fit, export, score =
onnxruntime on the held-out rows, calibrate, parity, write = hash of the data +
fingerprint + manifest + signature + atomic write). Target: ≤ 60 s for the default family.

Every family is timed (the default first); ``SENSORML_BENCH_FIT_DEFAULT_ONLY=1`` times
just the default.

Run: ``.venv/bin/python -m benchmarks fit``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_detection import families
from training import simdata

ROWS = 1_000_000
def healthy_like(rows: int = ROWS, seed: int = 0) -> tuple[np.ndarray, simdata.SimRun]:
    base = simdata.healthy_runs(2, 30.0, seed=seed)
    mean, cov = base.X.mean(0, dtype=np.float64), np.cov(base.X.astype(np.float64), rowvar=False)
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(mean, cov, size=rows, method="eigh").astype(np.float32)
    return X, base


def time_family(family: str, X: np.ndarray, base: simdata.SimRun, key: Path, out: Path) -> None:
    import training.fit as fit

    table = fit.FeatureTable(X, base.names, base.spec.to_dict(), "synthetic-1M")
    t = time.perf_counter()
    r = fit.fit_bundle(table, model=family, out=out, key=key, name="bench", version="1")
    total = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    steps = ", ".join(f"{k} {v:.2f}" for k, v in r.timings.items() if k != "total")
    print(f"{family:12s} total {total:6.1f} s  (target <= 60 s)  bundle {size / 1024:.0f} KiB  "
          f"fit on {r.manifest['metrics']['train_rows']} rows, "
          f"params {r.manifest['training']['params']}")
    print(f"{'':12s} {steps} s")


def main() -> None:
    from sensorml.bundles.bundle import keygen

    t = time.perf_counter()
    X, base = healthy_like()
    print(f"data: {X.shape[0]} rows x {X.shape[1]} features, float32 "
          f"({X.nbytes / 1e6:.0f} MB), multivariate normal with the mean/covariance of "
          f"{len(base.X)} simulated healthy windows [{time.perf_counter() - t:.1f} s to make]")
    fams, default = families()
    run = [default] + [f for f in fams if f != default]
    if os.environ.get("SENSORML_BENCH_FIT_DEFAULT_ONLY"):
        run = [default]
    with tempfile.TemporaryDirectory() as d:
        key, _ = keygen(Path(d) / "keys")
        for fam in run:
            mark = " (default)" if fam == default else ""
            print(f"-- {fam}{mark}: fit_bundle(1 M rows), holdout 25 %")
            time_family(fam, X, base, key, Path(d) / f"bundle-{fam}")


if __name__ == "__main__":
    main()
