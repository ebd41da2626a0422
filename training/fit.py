"""Fit a healthy-data anomaly model, calibrate its thresholds, export, check parity, sign.

:func:`fit_bundle` is the whole path from a feature table to a signed bundle:

1. split the healthy rows (seeded) into a fit part and a held-out part;
2. fit ``StandardScaler`` + ``IsolationForest`` (or ``PCA``) on the fit part;
3. export the compact ONNX graph (:mod:`training.export`) and score the held-out rows
   with onnxruntime — the scores the gateway will see;
4. refuse the export unless onnxruntime and scikit-learn agree on the held-out rows
   (max abs diff ≤ 1e-4 plus a 1e-5 relative term for large PCA errors);
5. calibrate warn/alarm/trip from the held-out healthy scores (:func:`calibrate`);
6. fingerprint the features (per-feature statistics for drift checks), write the
   manifest, sign it and write the bundle atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

from sensorml.bundle import write_bundle
from sensorml.errors import ConfigError
from training.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ParityError,
    iforest_to_onnx,
    onnx_scores,
    parity,
    pca_to_onnx,
    reference_scores,
)

__all__ = ["MODELS", "FeatureTable", "FitResult", "load_features", "load_table", "fit_model",
           "calibrate", "fingerprint", "fit_bundle"]

MODELS = ("iforest", "pca")
MIN_ROWS = 50


@dataclass(frozen=True)
class FeatureTable:
    """Healthy feature rows: ``X`` float32 [rows, features], their names and the spec dict."""

    X: np.ndarray
    names: tuple[str, ...]
    feature_spec: dict
    source: str = ""


@dataclass
class FitResult:
    bundle_path: Path | None
    manifest: dict
    onnx_bytes: bytes
    scaler: StandardScaler
    model: Any
    parity: dict
    holdout_scores: np.ndarray = field(repr=False)


def load_features(path: str | os.PathLike) -> FeatureTable:
    """Read the ``.npz`` written by ``sensorml learn``: ``X``, ``names``, ``feature_spec`` (JSON)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("X", "names") if k not in z.files]
            if missing:
                raise ConfigError(f"{p}: missing array(s) {', '.join(missing)} (have {', '.join(z.files)})")
            X, names = z["X"], tuple(str(n) for n in z["names"])
            spec = json.loads(str(z["feature_spec"])) if "feature_spec" in z.files else {"names": list(names)}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: not a readable feature file: {e}") from None
    return _check_table(FeatureTable(np.asarray(X, np.float32), names, spec, str(p)))


def load_table(path: str | os.PathLike, spec_path: str | os.PathLike | None = None) -> FeatureTable:
    """A CSV feature table: a header of feature names, one row per window (``#`` lines skipped)."""
    p = Path(path)
    try:
        with open(p, newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except OSError as e:
        raise ConfigError(f"{p}: cannot read feature table: {e.strerror or e}") from None
    if len(rows) < 2:
        raise ConfigError(f"{p}: needs a header row of feature names and at least one data row")
    names = tuple(h.strip() for h in rows[0])
    try:
        X = np.array([[float(v) for v in r] for r in rows[1:]], np.float32)
    except ValueError as e:
        raise ConfigError(f"{p}: non-numeric value in the table: {e}") from None
    spec: dict = {"names": list(names)}
    if spec_path is not None:
        try:
            spec = json.loads(Path(spec_path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{spec_path}: cannot read feature spec JSON: {e}") from None
    return _check_table(FeatureTable(X, names, spec, str(p)))


def _check_table(t: FeatureTable) -> FeatureTable:
    X = t.X
    if X.ndim != 2:
        raise ConfigError(f"{t.source}: X must be rows × features, got shape {X.shape}")
    if X.shape[1] != len(t.names):
        raise ConfigError(f"{t.source}: X has {X.shape[1]} columns but {len(t.names)} names")
    if X.shape[0] < MIN_ROWS:
        raise ConfigError(f"{t.source}: {X.shape[0]} rows; need at least {MIN_ROWS} healthy windows")
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ConfigError(f"{t.source}: {int(bad.sum())} non-finite value(s), first at row {r}, "
                          f"feature {t.names[c]}")
    if not isinstance(t.feature_spec, dict):
        raise ConfigError(f"{t.source}: feature_spec must be a JSON object")
    try:  # the spec's own names must be the table's columns, in order
        from sensorml.features import FeatureSpec

        spec_names = tuple(FeatureSpec.from_dict(t.feature_spec).names())
    except Exception:  # noqa: BLE001 - no features module yet or a spec of names only
        spec_names = tuple(t.feature_spec.get("names", t.names))
    if spec_names != t.names:
        raise ConfigError(f"{t.source}: the feature spec produces {len(spec_names)} features "
                          f"but the table has {len(t.names)} columns (or another order)")
    return t


def fit_model(X: np.ndarray, model: str = "iforest", *, random_state: int = 0,
              **params: Any) -> tuple[StandardScaler, Any]:
    """Fit the scaler and the detector on healthy rows (float32)."""
    X = np.asarray(X, np.float32)
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    if model == "iforest":
        est = IsolationForest(n_estimators=int(params.get("n_estimators", 100)),
                              max_samples=params.get("max_samples", "auto"),
                              random_state=random_state).fit(Z)
    elif model == "pca":
        nc = params.get("n_components", 0.95)
        est = PCA(n_components=nc, random_state=random_state).fit(Z)
        if est.n_components_ >= X.shape[1]:
            est = PCA(n_components=X.shape[1] - 1, random_state=random_state).fit(Z)
    else:
        raise ConfigError(f"model: {model!r} is not one of {', '.join(MODELS)}")
    return scaler, est


def calibrate(scores: np.ndarray, *, warn_q: float = 0.99, alarm_q: float = 0.999,
              trip_margin: float = 0.5) -> tuple[dict, str]:
    """Thresholds from held-out healthy scores and the text that says how.

    warn = quantile ``warn_q``; alarm = quantile ``alarm_q``; trip = max + ``trip_margin``
    × (max − median): beyond every healthy score by half its spread. Each is nudged
    above the one before so that warn < alarm < trip.

    >>> th, how = calibrate(np.linspace(0.0, 1.0, 1001))
    >>> round(th["warn"], 3), round(th["alarm"], 3), th["trip"]
    (0.99, 0.999, 1.25)
    """
    s = np.sort(np.asarray(scores, np.float64))
    med, mx = float(np.median(s)), float(s[-1])
    spread = max(mx - med, 1e-6)
    warn = float(np.quantile(s, warn_q))
    alarm = max(float(np.quantile(s, alarm_q)), warn + 1e-3 * spread)
    trip = max(mx + trip_margin * spread, alarm + 1e-3 * spread)
    method = (f"from {len(s)} held-out healthy windows scored by onnxruntime: warn = q{warn_q}, "
              f"alarm = q{alarm_q}, trip = max + {trip_margin} * (max - median); "
              "each nudged above the previous by 0.001 * spread")
    return {"warn": warn, "alarm": alarm, "trip": trip}, method


def fingerprint(X: np.ndarray, names: tuple[str, ...] | list[str]) -> dict:
    """Per feature: mean, std, min, max, p01, p99 of the training rows (for drift checks)."""
    X = np.asarray(X, np.float64)
    q01, q99 = np.quantile(X, [0.01, 0.99], axis=0)
    stats = {"mean": X.mean(0), "std": X.std(0), "min": X.min(0), "max": X.max(0),
             "p01": q01, "p99": q99}
    return {n: {k: float(v[i]) for k, v in stats.items()} for i, n in enumerate(names)}


def fit_bundle(table: FeatureTable, *, model: str = "iforest", out: str | os.PathLike | None,
               key: str | os.PathLike | None, name: str, version: str, holdout: float = 0.25,
               random_state: int = 0, anomalies: np.ndarray | None = None,
               **params: Any) -> FitResult:
    """Fit, export, check parity, calibrate and write a signed bundle (``out=None``: don't write)."""
    X = np.asarray(table.X, np.float32)
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(X))
    n_hold = max(int(round(holdout * len(X))), 20)
    hold, fit_rows = X[order[:n_hold]], X[order[n_hold:]]
    scaler, est = fit_model(fit_rows, model, random_state=random_state, **params)
    kind = str(params.get("pca_kind", "spe"))
    graph = iforest_to_onnx(est, scaler) if model == "iforest" else pca_to_onnx(est, scaler, kind=kind)
    onnx_bytes = graph.SerializeToString()
    got = onnx_scores(onnx_bytes, hold)
    ref = reference_scores(est, scaler, hold, kind=kind)
    thresholds, method = calibrate(got, **{k: params[k] for k in ("warn_q", "alarm_q", "trip_margin")
                                           if k in params})
    par = parity(ref, got, thresholds)
    if par["mismatches"] or not np.isfinite(got).all():
        raise ParityError(f"onnxruntime and scikit-learn disagree on {par['mismatches']} of "
                          f"{par['rows']} held-out rows (max abs diff {par['max_abs_diff']:.3g}); "
                          "not writing the bundle")
    metrics: dict[str, Any] = {
        "train_rows": len(fit_rows), "holdout_rows": len(hold),
        "parity_max_abs_diff": par["max_abs_diff"], "parity_max_rel_diff": par["max_rel_diff"],
        "holdout_score_p50": float(np.median(got)), "holdout_score_p99": float(np.quantile(got, 0.99)),
        "holdout_score_max": float(got.max()),
        "holdout_above_warn": float((got > thresholds["warn"]).mean()),
    }
    if anomalies is not None and len(anomalies):
        a = onnx_scores(onnx_bytes, np.asarray(anomalies, np.float32))
        metrics.update({f"anomalies_above_{k}": float((a > v).mean()) for k, v in thresholds.items()})
        metrics["anomaly_rows"] = len(a)
    family = "isolation_forest" if model == "iforest" else f"pca_{kind}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hashlib.sha256(X.tobytes() + "\0".join(table.names).encode()).hexdigest()
    manifest = {
        "name": name, "version": str(version), "created": now,
        "feature_spec": table.feature_spec, "feature_names": list(table.names),
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "thresholds": thresholds, "threshold_method": method,
        "fingerprint": fingerprint(X, table.names), "metrics": metrics,
        "model_family": family, "n_features": int(X.shape[1]),
        "training": {"rows": int(len(X)), "fitted_at": now, "data_sha256": digest,
                     "source": os.path.basename(table.source), "random_state": random_state,
                     "params": _params(est), "sklearn_version": sklearn.__version__},
    }
    path = write_bundle(out, manifest, onnx_bytes, key) if out is not None else None
    return FitResult(path, manifest, onnx_bytes, scaler, est, par, got)


def _params(est: Any) -> dict:
    keep = ("n_estimators", "max_samples", "contamination", "n_components", "random_state")
    out = {}
    for k, v in est.get_params().items():
        if k in keep:
            out[k] = v if isinstance(v, int | float | str | type(None)) else str(v)
    if isinstance(est, PCA):
        out["n_components_"] = int(est.n_components_)
    return out
