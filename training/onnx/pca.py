"""PCA: Hotelling T² and the reconstruction error Q (SPE), or both combined.

StandardScaler + PCA as Sub → Sub → MatMul → Mul → ReduceSum (the scaler folded into the
matrix, the centre split into a float32 hi/lo pair to keep precision); ``kind="combined"``
computes both, each divided by its limit, and takes the larger.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError
from training.onnx.common import OUTPUT_NAME, build_model, centre_nodes, scaler_arrays

__all__ = ["pca_reference", "pca_statistics", "pca_to_onnx"]


def pca_to_onnx(pca: PCA, scaler: StandardScaler | None = None, *, kind: str = "spe",
                limits: tuple[float, float] | None = None) -> onnx.ModelProto:
    """Squared reconstruction error (``kind="spe"``, Q), Hotelling T² (``"t2"``) or both.

    With z = scaler(x) and c = z - pca.mean_: SPE = |c (I - WᵀW)|², T² = Σ (c Wᵀ)² / λ.
    Both are ``(x - centre) @ M`` squared and summed, with 1/scale folded into M.
    ``"combined"`` = max(T² / T²_limit, Q / Q_limit) with ``limits=(T²_limit, Q_limit)``
    (default: the estimator's ``t2_limit_``/``q_limit_`` set by :func:`training.models`'s
    PCA fit, the 99th percentiles of each statistic on the fitting rows), folded in as
    1/√limit in each matrix: 1.0 means "as rare as the healthy 1 %" for either statistic.
    """
    n_features = int(pca.n_features_in_)
    w = pca.components_.astype(np.float64)  # k x n
    mean, scale = scaler_arrays(scaler, n_features)
    centre = mean + scale * pca.mean_
    spe = (np.eye(n_features) - w.T @ w) / scale[:, None]
    t2 = (w.T / np.sqrt(pca.explained_variance_)[None, :]) / scale[:, None]
    nodes, inits = centre_nodes(centre)
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))

    def sumsq(mat: np.ndarray, tag: str, out: str) -> None:
        inits.append(numpy_helper.from_array(mat.astype(np.float32), f"proj_{tag}"))
        nodes.extend([helper.make_node("MatMul", ["d", f"proj_{tag}"], [f"r_{tag}"]),
                      helper.make_node("Mul", [f"r_{tag}", f"r_{tag}"], [f"r2_{tag}"]),
                      helper.make_node("ReduceSum", [f"r2_{tag}", "axis1"], [out], keepdims=1)])

    if kind in ("spe", "t2"):
        sumsq(spe if kind == "spe" else t2, "", OUTPUT_NAME)
    elif kind == "combined":
        t2_lim, q_lim = limits if limits is not None else (getattr(pca, "t2_limit_", None),
                                                           getattr(pca, "q_limit_", None))
        if not (t2_lim and q_lim and t2_lim > 0 and q_lim > 0):
            raise ModelError("pca combined: needs positive T² and Q limits (fit with "
                             "training.models or pass limits=(t2_limit, q_limit))")
        sumsq(t2 / np.sqrt(t2_lim), "t2", "t2n")
        sumsq(spe / np.sqrt(q_lim), "q", "qn")
        nodes.append(helper.make_node("Max", ["t2n", "qn"], [OUTPUT_NAME]))
    else:
        raise ValueError(f"kind: {kind!r} is not 'spe', 't2' or 'combined'")
    return build_model(nodes, inits, n_features, f"pca_{kind}",
                  f"PCA {kind.upper()} of standardised x; higher is anomalous")


def pca_statistics(pca: PCA, scaler: StandardScaler | None, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hotelling T² and Q (SPE) of float32 rows, in float64 (the parity reference)."""
    z = np.asarray(X, np.float32).astype(np.float64)
    if scaler is not None:
        z = scaler.transform(z)
    c = z - pca.mean_
    w = pca.components_.astype(np.float64)
    t = c @ w.T
    r = c - t @ w
    return ((t / np.sqrt(pca.explained_variance_)) ** 2).sum(axis=1), (r * r).sum(axis=1)


def pca_reference(model: PCA, scaler: StandardScaler | None, X32: np.ndarray, *,
                  kind: str = "spe") -> np.ndarray:
    """SPE, T² or combined computed in float64 from the float32 rows (scikit-learn's float32
    scaler loses digits on features whose spread is tiny next to their mean; the graph
    does not)."""
    t2, q = pca_statistics(model, scaler, X32)
    if kind == "spe":
        return q
    if kind == "t2":
        return t2
    return np.maximum(t2 / model.t2_limit_, q / model.q_limit_)
