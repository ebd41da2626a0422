"""GaussianMixture as a compact ONNX graph: score = negative log-likelihood.

With z = (x - mean) / scale (the scaler) and, per component k, the precision Cholesky
factor L_k (``precisions_cholesky_``, so Σ_k⁻¹ = L_k L_kᵀ)::

    log p_k(z) = log w_k + log det L_k - d/2 · log 2π - ½ |(z - μ_k) L_k|²
    score(x)  = -logsumexp_k log p_k(z)          (= -GaussianMixture.score_samples)

Graph: Sub → Sub (centre as a float32 hi/lo pair) → Mul (1/scale) → Unsqueeze →
Sub (all μ_k at once, broadcast to [N, K, 1, d]) → one batched MatMul with the stacked
L_k [K, d, d] → Mul → ReduceSum → Mul (-½) → Add (per-component constants) →
ReduceLogSumExp (onnxruntime subtracts the max: no underflow for far outliers) → Neg.
Covariance types ``full``, ``tied``, ``diag`` and ``spherical`` are all expanded to
[K, d, d] factors, so one graph shape serves every type.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from training.onnx.common import INPUT_NAME, OUTPUT_NAME, build_model, centre_nodes, scaler_arrays

__all__ = ["gmm_to_onnx", "gmm_reference", "precision_factors"]


def precision_factors(gmm: GaussianMixture) -> np.ndarray:
    """The precision Cholesky factors as a [K, d, d] float64 array, whatever the type."""
    k, d = gmm.means_.shape
    pc = np.asarray(gmm.precisions_cholesky_, np.float64)
    ct = gmm.covariance_type
    if ct == "full":
        return pc
    if ct == "tied":
        return np.broadcast_to(pc, (k, d, d)).copy()
    if ct == "diag":
        return np.stack([np.diag(p) for p in pc])
    if ct == "spherical":
        return np.stack([np.eye(d) * p for p in pc])
    raise ValueError(f"covariance_type {ct!r} is not supported")


def gmm_to_onnx(gmm: GaussianMixture, scaler: StandardScaler | None = None) -> onnx.ModelProto:
    """``-gmm.score_samples(scaler(x))`` as one graph of 13 nodes (see the module doc)."""
    k, d = gmm.means_.shape
    mean, scale = scaler_arrays(scaler, d)
    L = precision_factors(gmm)
    log_det = np.log(np.abs(np.diagonal(L, axis1=1, axis2=2))).sum(axis=1)
    const = np.log(gmm.weights_) + log_det - 0.5 * d * np.log(2 * np.pi)
    nodes, inits = centre_nodes(mean)
    inits += [numpy_helper.from_array((1.0 / scale).astype(np.float32), "inv_scale"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
              numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
              numpy_helper.from_array(gmm.means_.reshape(k, 1, d).astype(np.float32), "means"),
              numpy_helper.from_array(L.astype(np.float32), "prec_chol"),
              numpy_helper.from_array(np.array(-0.5, np.float32), "minus_half"),
              numpy_helper.from_array(const.astype(np.float32), "const")]
    nodes += [helper.make_node("Mul", ["d", "inv_scale"], ["z"]),
              helper.make_node("Unsqueeze", ["z", "axes12"], ["z4"]),          # [N, 1, 1, d]
              helper.make_node("Sub", ["z4", "means"], ["c"]),                 # [N, K, 1, d]
              helper.make_node("MatMul", ["c", "prec_chol"], ["y"]),           # [N, K, 1, d]
              helper.make_node("Mul", ["y", "y"], ["y2"]),
              helper.make_node("ReduceSum", ["y2", "axes23"], ["maha"], keepdims=0),  # [N, K]
              helper.make_node("Mul", ["maha", "minus_half"], ["half"]),
              helper.make_node("Add", ["half", "const"], ["loglik_k"]),
              helper.make_node("ReduceLogSumExp", ["loglik_k"], ["loglik"], axes=[1], keepdims=1),
              helper.make_node("Neg", ["loglik"], [OUTPUT_NAME])]
    assert nodes[0].input[0] == INPUT_NAME
    return build_model(nodes, inits, d, "gmm",
                       f"GaussianMixture ({k} {gmm.covariance_type} components) negative "
                       "log-likelihood of standardised x; higher is anomalous")


def gmm_reference(gmm: GaussianMixture, scaler: StandardScaler | None, X: np.ndarray) -> np.ndarray:
    """``-score_samples`` by scikit-learn on the float32 rows standardised in float64."""
    z = np.asarray(X, np.float32).astype(np.float64)
    if scaler is not None:
        z = scaler.transform(z)
    return -gmm.score_samples(z)
