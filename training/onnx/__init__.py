"""Compact ONNX graphs for the edge, built node by node with ``onnx.helper``.

- :func:`training.onnx.iforest.iforest_to_onnx`: StandardScaler + IsolationForest as ONE ``TreeEnsembleRegressor``
  node plus three arithmetic nodes; the scaler is folded into the split thresholds.
  Output ``score`` = ``-decision_function(x)`` (higher is more anomalous).
- :func:`training.onnx.pca.pca_to_onnx`: StandardScaler + PCA reconstruction error (SPE/Q) or Hotelling
  T², as Sub → Sub → MatMul → Mul → ReduceSum (the scaler folded into the matrix,
  the centre split into a float32 hi/lo pair to keep precision); ``kind="combined"``
  computes both, each divided by its limit, and takes the larger.
- GaussianMixture and the MLP autoencoder live in :mod:`training.onnx.gmm` and
  :mod:`training.onnx.autoencoder`; :func:`reference_scores` dispatches to each family.

Each graph takes ``x`` float32 ``[N, n_features]`` and returns ``score`` float32 ``[N, 1]``;
one module per family holds its graph and its scikit-learn reference scorer.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError
from training.onnx.autoencoder import autoencoder_reference
from training.onnx.gmm import gmm_reference
from training.onnx.iforest import iforest_reference
from training.onnx.pca import pca_reference

__all__ = ["reference_scores"]


def reference_scores(model, scaler: StandardScaler | None, X: np.ndarray, *,
                     kind: str = "spe") -> np.ndarray:
    """The anomaly score of float32 rows as scikit-learn defines it: the parity reference
    (each family's own ``*_reference``)."""
    X32 = np.asarray(X, np.float32)
    if isinstance(model, IsolationForest):
        return iforest_reference(model, scaler, X32)
    if isinstance(model, PCA):
        return pca_reference(model, scaler, X32, kind=kind)
    if isinstance(model, GaussianMixture):
        return gmm_reference(model, scaler, X32)
    if isinstance(model, MLPRegressor):
        return autoencoder_reference(model, scaler, X32)
    raise ModelError(f"no reference scores for {type(model).__name__}")
