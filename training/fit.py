"""Fit a healthy-data anomaly model, calibrate its thresholds, export, check parity, sign.

:func:`fit_bundle` is the whole path from a feature table to a signed bundle:

1. hold out the last ``holdout`` share of the rows (``holdout_split="tail"``, the
   default) or a seeded random share (``"random"``). Successive windows overlap and
   the machine drifts slowly, so a random held-out window has neighbours sharing half
   its samples in the fit part: its scores say how well the model interpolates, not
   how it does on the next hour. The tail holdout is that next hour; under drift it
   gives more cautious thresholds (``tests/training/test_fit.py``). Its weak spot: an
   operating state that only occurs at the end of the recording is never fitted (the
   simulator's 70 s healthy run trained this way still passes the gateway's healthy
   and fault end-to-end tests). Record all operating states early, or use ``random``;
2. fit the model family (:mod:`training.models`: ``iforest``, ``pca``, ``gmm``,
   ``autoencoder``) on the other rows;
3. export the compact ONNX graph and score every held-out row with onnxruntime — the
   scores the gateway will see — in batches;
4. calibrate warn/alarm/trip for target false events per day of operation
   (:mod:`training.calibrate`), the window period taken from the feature spec;
5. refuse the export unless onnxruntime and scikit-learn agree (within the family's
   tolerance, and no verdict flips at the thresholds) on up to ``parity_rows`` held-out
   rows plus any known-bad rows;
6. fingerprint the features (per-feature statistics for drift checks), write the
   manifest, sign it and write the bundle atomically.

A million rows × 45 features stay within a few hundred MB: the families fit on a seeded
subsample where the algorithm allows it, scoring is batched, and the fingerprint's
percentiles come from at most 200 000 rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.preprocessing import StandardScaler

from sensorml.bundles.bundle import write_bundle
from sensorml.errors import ConfigError
from training.calibrate import DEFAULT_RATES, calibrate_thresholds, window_period_from_spec
from training.models import COMMON_PARAMS, FAMILIES, family_params, get_family
from training.onnx.common import INPUT_NAME, OUTPUT_NAME, ParityError, onnx_scores, parity

__all__ = ["MODELS", "FeatureTable", "FitResult", "load_features", "load_table", "fit_model",
           "calibrate", "fingerprint", "fit_bundle", "split_holdout"]

MODELS = tuple(FAMILIES)
MIN_ROWS = 50
#: window period assumed when neither the call nor the feature spec gives one
DEFAULT_WINDOW_PERIOD_S = 1.0


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
    timings: dict = field(default_factory=dict)


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
        from sensorml.edge.features import FeatureSpec

        spec_names = tuple(FeatureSpec.from_dict(t.feature_spec).names())
    except Exception:  # noqa: BLE001 - no features module yet or a spec of names only
        spec_names = tuple(t.feature_spec.get("names", t.names))
    if spec_names != t.names:
        raise ConfigError(f"{t.source}: the feature spec produces {len(spec_names)} features "
                          f"but the table has {len(t.names)} columns (or another order)")
    return t


#: the family fitted when none is named: PCA with a combined Hotelling T² / Q score. On the
#: simulator's faults it detects every fault type at a quarter severity within 0.1 s and
#: made no false trip, alarm or warn over 24 simulated hours; IsolationForest missed 4 of
#: 10 weak faults (benchmarks/bench_detection.py); on Tennessee Eastman it has the lowest
#: false-alarm rate of the families (benchmarks/bench_tep.py). See README, "Models".
DEFAULT_MODEL = "pca"


def fit_model(X: np.ndarray, model: str = DEFAULT_MODEL, *, random_state: int = 0,
              **params: Any) -> tuple[StandardScaler, Any]:
    """Fit the scaler and the detector of family *model* on healthy rows (float32)."""
    fam = get_family(model)
    return fam.fit(np.asarray(X, np.float32), random_state, family_params(fam, params))


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


def fingerprint(X: np.ndarray, names: tuple[str, ...] | list[str], *,
                quantile_rows: int = 200_000) -> dict:
    """Per feature: mean, std, min, max of every row; p01, p99 of at most *quantile_rows*
    rows spread evenly over the table (for drift checks on the gateway)."""
    X = np.asarray(X)
    step = max(1, -(-len(X) // quantile_rows))
    q01, q99 = np.quantile(X[::step].astype(np.float64), [0.01, 0.99], axis=0)
    chunks = range(0, len(X), 100_000)  # float64 temporaries of 100k rows, not of X
    mean = sum(X[i:i + 100_000].sum(0, dtype=np.float64) for i in chunks) / len(X)
    var = sum(((X[i:i + 100_000] - mean) ** 2).sum(0) for i in chunks) / len(X)
    stats = {"mean": mean, "std": np.sqrt(var), "min": X.min(0), "max": X.max(0),
             "p01": q01, "p99": q99}
    return {n: {k: float(v[i]) for k, v in stats.items()} for i, n in enumerate(names)}


def split_holdout(n: int, share: float, split: str, random_state: int) -> tuple[Any, Any]:
    """Row selections (fit, holdout): ``tail`` = the last *share* rows, ``random`` = seeded."""
    if not 0.0 < share < 1.0:
        raise ConfigError(f"holdout: {share} is not a share between 0 and 1")
    n_hold = max(int(round(share * n)), 20)
    if n - n_hold < 20:
        raise ConfigError(f"holdout: {n} rows leave {n - n_hold} to fit after holding out {n_hold}")
    if split == "tail":
        return slice(0, n - n_hold), slice(n - n_hold, n)
    if split == "random":
        order = np.random.default_rng(random_state).permutation(n)
        return np.sort(order[n_hold:]), np.sort(order[:n_hold])
    raise ConfigError(f"holdout_split: {split!r} is not 'tail' or 'random'")


LEGACY_CALIBRATION = ("warn_q", "alarm_q", "trip_margin")


def fit_bundle(table: FeatureTable, *, model: str = DEFAULT_MODEL, out: str | os.PathLike | None,
               key: str | os.PathLike | None, name: str, version: str,
               holdout: float | str = 0.25, holdout_split: str = "tail", random_state: int = 0,
               anomalies: np.ndarray | None = None, window_period_s: float | None = None,
               target_false_warn_per_day: float = DEFAULT_RATES["warn"],
               target_false_alarm_per_day: float = DEFAULT_RATES["alarm"],
               target_false_trip_per_day: float = DEFAULT_RATES["trip"], tail: str = "auto",
               parity_rows: int = 20_000, progress: Callable[[str], None] | None = None,
               **params: Any) -> FitResult:
    """Fit, export, check parity, calibrate and write a signed bundle (``out=None``: don't write).

    *holdout*: the share held out for calibration, or ``"tail"``/``"random"`` (share 0.25).
    *params*: the family's options (see ``training.models.FAMILIES[model].defaults``);
    options of other families are ignored, unknown names are an error. Passing
    ``warn_q``/``alarm_q``/``trip_margin`` uses the old quantile rule (:func:`calibrate`).
    """
    fam = get_family(model)
    known = set(COMMON_PARAMS) | set(LEGACY_CALIBRATION)
    for f in FAMILIES.values():
        known |= set(f.defaults)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"fit_bundle: unknown option(s) {', '.join(unknown)}")
    say = progress or (lambda msg: None)
    if isinstance(holdout, str):
        holdout, holdout_split = 0.25, holdout
    t = {"start": time.perf_counter()}
    X = np.asarray(table.X, np.float32)
    fit_sel, hold_sel = split_holdout(len(X), float(holdout), holdout_split, random_state)
    fit_rows, hold = X[fit_sel], X[hold_sel]
    fp = family_params(fam, params)
    say(f"fitting {model} on {len(fit_rows)} rows × {X.shape[1]} features")
    scaler, est = fam.fit(fit_rows, random_state, fp)
    t["fit"] = time.perf_counter()
    onnx_bytes = fam.export(est, scaler, fp).SerializeToString()
    t["export"] = time.perf_counter()
    say(f"scoring {len(hold)} held-out rows with onnxruntime")
    got = onnx_scores(onnx_bytes, hold)
    if not np.isfinite(got).all():
        raise ParityError(f"{model}: onnxruntime gave {int((~np.isfinite(got)).sum())} non-finite "
                          "scores on healthy held-out rows; not writing the bundle")
    t["score"] = time.perf_counter()
    period = window_period_s or window_period_from_spec(table.feature_spec) or DEFAULT_WINDOW_PERIOD_S
    if any(k in params for k in LEGACY_CALIBRATION):
        thresholds, method = calibrate(got, **{k: params[k] for k in LEGACY_CALIBRATION if k in params})
        calib: dict = {"rule": "quantiles"}
    else:
        c = calibrate_thresholds(got, window_period_s=period, tail=tail,
                                 rates={"warn": target_false_warn_per_day,
                                        "alarm": target_false_alarm_per_day,
                                        "trip": target_false_trip_per_day})
        thresholds, method, calib = c.thresholds, c.method, c.details
    t["calibrate"] = time.perf_counter()
    step = max(1, -(-len(hold) // max(parity_rows, 1)))
    check = hold[::step]
    bad = np.asarray(anomalies, np.float32) if anomalies is not None and len(anomalies) else None
    if bad is not None:
        check = np.vstack([check, bad])
    say(f"parity check on {len(check)} rows")
    got_check = np.concatenate([got[::step], onnx_scores(onnx_bytes, bad)]) if bad is not None \
        else got[::step]
    par = parity(fam.reference(est, scaler, check, fp), got_check, thresholds,
                 atol=fam.atol, rtol=fam.rtol)
    if par["mismatches"] or par["verdict_flips"]:
        raise ParityError(f"{model}: onnxruntime and scikit-learn disagree on {par['mismatches']} of "
                          f"{par['rows']} rows ({par['verdict_flips']} verdict flips, max abs diff "
                          f"{par['max_abs_diff']:.3g}); not writing the bundle")
    t["parity"] = time.perf_counter()
    metrics: dict[str, Any] = {
        "train_rows": len(fit_rows), "holdout_rows": len(hold),
        "parity_rows": par["rows"], "parity_max_abs_diff": par["max_abs_diff"],
        "parity_max_rel_diff": par["max_rel_diff"],
        "holdout_score_p50": float(np.median(got)), "holdout_score_p99": float(np.quantile(got, 0.99)),
        "holdout_score_max": float(got.max()),
        "holdout_above_warn": float((got > thresholds["warn"]).mean()),
    }
    if bad is not None:
        a = got_check[len(got_check) - len(bad):]
        metrics.update({f"anomalies_above_{k}": float((a > v).mean()) for k, v in thresholds.items()})
        metrics["anomaly_rows"] = len(a)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hashlib.sha256(np.ascontiguousarray(X).data)
    digest.update("\0".join(table.names).encode())
    manifest = {
        "name": name, "version": str(version), "created": now,
        "feature_spec": table.feature_spec, "feature_names": list(table.names),
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "thresholds": thresholds, "threshold_method": method, "calibration": _plain(calib),
        "fingerprint": fingerprint(X, table.names), "metrics": metrics,
        "model_family": model, "n_features": int(X.shape[1]),
        "training": {"rows": int(len(X)), "fitted_at": now, "data_sha256": digest.hexdigest(),
                     "source": os.path.basename(table.source), "random_state": random_state,
                     "holdout": {"split": holdout_split, "share": float(holdout)},
                     "params": _plain({**fp, **_fitted(est)}), "family_doc": fam.doc,
                     "sklearn_version": sklearn.__version__},
    }
    say("signing and writing the bundle" if key else "writing the bundle")
    path = write_bundle(out, manifest, onnx_bytes, key) if out is not None else None
    t["write"] = time.perf_counter()
    names = ("fit", "export", "score", "calibrate", "parity", "write")
    prev = t["start"]
    timings = {}
    for k in names:
        timings[k] = t[k] - prev
        prev = t[k]
    timings["total"] = prev - t["start"]
    return FitResult(path, manifest, onnx_bytes, scaler, est, par, got, timings)


def _fitted(est: Any) -> dict:
    """What the fit decided, for the manifest (sizes, limits), not the parameters given."""
    out: dict = {}
    for k in ("n_components_", "t2_limit_", "q_limit_", "n_iter_", "converged_"):
        v = getattr(est, k, None)
        if v is not None:
            out[k] = v
    if hasattr(est, "coefs_"):
        out["layers"] = [int(est.coefs_[0].shape[0])] + [int(w.shape[1]) for w in est.coefs_]
    if hasattr(est, "estimators_") and hasattr(est, "_max_samples"):
        out["max_samples_"] = int(est._max_samples)
    return out


def _plain(d: Any) -> Any:
    """JSON-ready copy: numpy scalars → numbers, tuples → lists."""
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return [_plain(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d
