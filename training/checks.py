"""``check_detector``: the checks every model family must pass before it ships.

On seeded synthetic healthy data (correlated features from a few latent machine states,
on scales from 0.01 to 50 and offsets up to 60, as real features are) it runs
:func:`training.fit.fit_bundle` for the family and checks:

1. **determinism** — two fits with the same seed give identical ONNX bytes, thresholds
   and held-out scores;
2. **ONNX parity** — onnxruntime against scikit-learn on ≥ 2000 fresh rows (healthy,
   planted faults, far outliers): every row within the family's tolerance, zero verdict
   flips at the calibrated warn/alarm/trip;
3. **compact graph** — opsets ``{'': 17, 'ai.onnx.ml': 3}``, input ``x`` [N, n_features],
   output ``score``, at most ``max_nodes`` nodes;
4. **score direction** — far outliers (every feature pushed ±6σ) score above every
   fresh healthy row;
5. **planted fault** — ``n_shifted`` features shifted by ``shift_sigma`` σ (a fault that
   raises a few related features together) land above warn in ≥ ``min_detected`` of rows;
6. **wrong input width** — the bundle, loaded by :func:`sensorml.bundles.bundle.load_bundle` and
   run by :class:`sensorml.edge.scorer.Scorer`, refuses n - 1 and n + 1 features with a
   :class:`~sensorml.errors.ModelError` naming both numbers, and onnxruntime itself
   refuses the wrong width.

Thresholds are calibrated as ``fit_bundle`` does it, for a table with one row per minute
(``window_period_s=60``: warn at one false event per day = p ≈ 7e-4 per row).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sensorml.errors import ModelError
from training.fit import FeatureTable, fit_bundle
from training.models import get_family
from training.onnx.common import OPSET, onnx_scores, parity

__all__ = ["check_detector", "DetectorCheckError", "synthetic_healthy", "plant_shift"]


class DetectorCheckError(AssertionError):
    """One or more checks failed; the message lists each."""


def synthetic_healthy(n: int, n_features: int = 12, seed: int = 0, *, latent: int | None = None,
                      noise: float = 0.3) -> np.ndarray:
    """Healthy rows: ``latent`` machine states mixed into correlated features, plus noise.

    The mixing, scales and offsets depend only on *n_features* (the same "machine" for
    every seed); *seed* draws the rows.
    """
    k = latent or max(2, n_features // 3)
    fixed = np.random.default_rng(1000 + n_features)
    mix = fixed.normal(size=(k, n_features))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k)) @ mix + noise * rng.normal(size=(n, n_features))
    scale = np.geomspace(0.01, 50, n_features)
    return (X * scale + np.linspace(0, 60, n_features)).astype(np.float32)


def plant_shift(X: np.ndarray, sigma: np.ndarray, *, n_shifted: int, shift_sigma: float,
                seed: int) -> np.ndarray:
    """Each row with ``n_shifted`` random features raised by ``shift_sigma`` × their σ."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    for row in out:
        j = rng.choice(X.shape[1], size=n_shifted, replace=False)
        row[j] += shift_sigma * sigma[j]
    return out


def check_detector(family: str, *, seed: int = 0, n_features: int = 12, n_fit: int = 3000,
                   n_check: int = 2000, shift_sigma: float = 4.0, n_shifted: int = 3,
                   min_detected: float = 0.9, max_nodes: int = 64, raise_on_failure: bool = True,
                   **params: Any) -> dict:
    """Run the checks (module doc) for *family* with the family's *params*; return figures.

    Raises :class:`DetectorCheckError` listing every failed check (unless
    ``raise_on_failure=False``: then the figures carry ``failures``).
    """
    fam = get_family(family)
    names = tuple(f"f{i:02d}" for i in range(n_features))
    X = synthetic_healthy(n_fit, n_features, seed)
    table = FeatureTable(X, names, {"names": list(names), "window_period_s": 60.0}, "synthetic")
    failures: list[str] = []
    fig: dict[str, Any] = {"family": family, "params": dict(params), "fit_rows": n_fit,
                           "n_features": n_features}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r1 = fit_bundle(table, model=family, out=Path(tmp) / "b", key=None, name="check",
                        version="1", random_state=seed, **params)
        fig["fit_bundle_s"] = time.perf_counter() - t0
        r2 = fit_bundle(table, model=family, out=None, key=None, name="check", version="1",
                        random_state=seed, **params)
        if r1.onnx_bytes != r2.onnx_bytes:
            failures.append("determinism: two fits with the same seed gave different ONNX bytes")
        if r1.manifest["thresholds"] != r2.manifest["thresholds"] or \
                not np.array_equal(r1.holdout_scores, r2.holdout_scores):
            failures.append("determinism: same seed, different thresholds or held-out scores")
        th = r1.manifest["thresholds"]
        fig["thresholds"] = th

        model = onnx.load_from_string(r1.onnx_bytes)
        fig["onnx_nodes"], fig["onnx_bytes"] = len(model.graph.node), len(r1.onnx_bytes)
        opsets = {o.domain: o.version for o in model.opset_import}
        width = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        if {k: v for k, v in opsets.items() if k in OPSET} != OPSET or set(opsets) - set(OPSET):
            failures.append(f"compact graph: opsets {opsets}, expected {OPSET}")
        if fig["onnx_nodes"] > max_nodes:
            failures.append(f"compact graph: {fig['onnx_nodes']} nodes (max {max_nodes})")
        if [i.name for i in model.graph.input] != ["x"] or width[-1:] != [n_features] or \
                [o.name for o in model.graph.output] != ["score"]:
            failures.append(f"compact graph: input/output are {[i.name for i in model.graph.input]} "
                            f"{width} → {[o.name for o in model.graph.output]}")

        fresh = synthetic_healthy(n_check, n_features, seed + 101)
        sigma = X.std(axis=0)
        fault = plant_shift(synthetic_healthy(n_check // 2, n_features, seed + 202), sigma,
                            n_shifted=n_shifted, shift_sigma=shift_sigma, seed=seed + 303)
        signs = np.where(np.random.default_rng(seed + 404).random((200, n_features)) < 0.5, -1, 1)
        far = (synthetic_healthy(200, n_features, seed + 505) + 6 * signs * sigma).astype(np.float32)
        rows = np.vstack([fresh, fault, far])
        got = onnx_scores(r1.onnx_bytes, rows)
        ref = fam.reference(r1.model, r1.scaler, rows, _family_params(r1))
        par = parity(ref, got, th, atol=fam.atol, rtol=fam.rtol)
        fig["parity"] = par
        if par["mismatches"] or par["verdict_flips"] or not np.isfinite(got).all():
            failures.append(f"parity: {par['mismatches']} of {par['rows']} rows outside tolerance, "
                            f"{par['verdict_flips']} verdict flips (max abs {par['max_abs_diff']:.3g})")

        h, f, o = got[:n_check], got[n_check:n_check + len(fault)], got[n_check + len(fault):]
        fig["healthy_above_warn"] = float((h > th["warn"]).mean())
        fig["healthy_above_trip"] = float((h > th["trip"]).mean())
        fig["outliers_min_over_healthy_max"] = float(o.min() - h.max())
        if not o.min() > h.max():
            failures.append(f"direction: {int((o <= h.max()).sum())} of {len(o)} far outliers "
                            "score at or below the highest healthy row")
        fig["fault_detected"] = {k: float((f > v).mean()) for k, v in th.items()}
        fig["fault_auc"] = float((f[:, None] > h[None, :]).mean())
        if fig["fault_detected"]["warn"] < min_detected:
            failures.append(f"planted fault ({n_shifted} features +{shift_sigma:g}σ): "
                            f"{fig['fault_detected']['warn']:.1%} above warn, need "
                            f"{min_detected:.0%}")

        failures += _width_checks(r1.bundle_path, r1.onnx_bytes, n_features)
    fig["failures"] = failures
    if failures and raise_on_failure:
        raise DetectorCheckError(f"{family}: " + "; ".join(failures))
    return fig


def _family_params(r) -> dict:
    """The family parameters fit_bundle used, as recorded in the manifest."""
    fam = get_family(r.manifest["model_family"])
    return {k: r.manifest["training"]["params"].get(k, v) for k, v in fam.defaults.items()}


def _width_checks(bundle_path: Path, onnx_bytes: bytes, n: int) -> list[str]:
    from sensorml.bundles.bundle import load_bundle
    from sensorml.edge.scorer import Scorer

    out = []
    scorer = Scorer(load_bundle(bundle_path, trusted_keys=[], allow_unsigned=True))
    for width in (n - 1, n + 1):
        try:
            scorer.score(np.zeros(width, np.float32))
            out.append(f"width: Scorer accepted {width} features for a {n}-feature model")
        except ModelError as e:
            if f"expects {n} features, got {width}" not in str(e):
                out.append(f"width: message does not name both numbers: {e}")
        try:
            onnx_scores(onnx_bytes, np.zeros((2, width), np.float32))
            out.append(f"width: onnxruntime accepted {width} features for a {n}-feature graph")
        except Exception:  # noqa: BLE001,S110 - onnxruntime's own error type is the refusal
            pass
    return out
