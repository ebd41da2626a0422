"""Model families: how each is fitted, exported to ONNX and scored by scikit-learn.

A :class:`Family` bundles three functions over the same fitted pair (scaler, estimator):

- ``fit(X, random_state, params) -> (scaler, estimator)`` on healthy float32 rows;
- ``export(estimator, scaler, params) -> onnx.ModelProto`` (input ``x`` float32
  ``[N, n_features]``, output ``score`` ``[N, 1]``, higher = more anomalous);
- ``reference(estimator, scaler, X, params) -> float64 scores``: scikit-learn's own
  scores, which the ONNX graph must reproduce (the parity check).

Every family standardises first (``StandardScaler`` on the fit rows); a family whose
algorithm allows it fits on at most ``max_fit_rows`` rows drawn with the seed, so that
a million rows cost no more than a few seconds (``max_fit_rows=None`` fits on all).
Any feature matrix works: lagged or windowed table features are just more columns.

Adding a family: write the three functions, ``register(Family(...))``, and make it pass
:func:`training.checks.check_detector`.

>>> sorted(FAMILIES)
['autoencoder', 'gmm', 'iforest', 'pca']
>>> get_family("pca").defaults["pca_kind"]
'combined'
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sensorml.errors import ConfigError
from training.onnx import reference_scores
from training.onnx.autoencoder import ACTIVATIONS, autoencoder_to_onnx
from training.onnx.gmm import gmm_to_onnx
from training.onnx.iforest import iforest_to_onnx
from training.onnx.pca import pca_statistics, pca_to_onnx

__all__ = ["Family", "FAMILIES", "register", "get_family", "family_params", "COMMON_PARAMS"]

#: parameters fit_bundle understands for every family (not passed to the estimators)
COMMON_PARAMS = frozenset({"max_fit_rows"})


@dataclass(frozen=True)
class Family:
    """One model family; ``defaults`` lists every parameter it accepts and its default."""

    name: str
    fit: Callable[[np.ndarray, int, dict], tuple[StandardScaler, Any]]
    export: Callable[[Any, StandardScaler, dict], onnx.ModelProto]
    reference: Callable[[Any, StandardScaler, np.ndarray, dict], np.ndarray]
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    #: parity tolerance |onnx - sklearn| <= atol + rtol * |sklearn|
    atol: float = 1e-4
    rtol: float = 1e-5


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add (or replace) a family in the registry; returns it."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"model: {name!r} is not one of {', '.join(FAMILIES)}") from None


def family_params(family: Family, params: dict) -> dict:
    """The family's defaults overridden by the given values it knows (others are ignored,
    so one CLI can pass every family's options); ``None`` means "the default"."""
    out = dict(family.defaults)
    out.update({k: v for k, v in params.items() if k in family.defaults and v is not None})
    return out


def one_thread(fit: Callable) -> Callable:
    """Run a fit with BLAS/OpenMP on one thread: small matrix products on a busy 2-core
    machine ran up to 25x slower with two threads spinning against each other."""
    @functools.wraps(fit)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1):
            return fit(*args, **kwargs)
    return wrapper


def _subsample(X: np.ndarray, max_rows: int | None, random_state: int) -> np.ndarray:
    if max_rows is None or len(X) <= max_rows:
        return X
    idx = np.sort(np.random.default_rng(random_state).choice(len(X), int(max_rows), replace=False))
    return X[idx]


def _scaled(X: np.ndarray, random_state: int, max_rows: int | None) -> tuple[StandardScaler, np.ndarray]:
    """Scaler fitted on every row (cheap); standardised float64 rows for the estimator."""
    X = np.asarray(X, np.float32)
    scaler = StandardScaler().fit(X)
    part = _subsample(X, max_rows, random_state)
    return scaler, scaler.transform(part.astype(np.float64))


# --- IsolationForest ---------------------------------------------------------------

def rotation(Z: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) for the trees' input ``(Z - mean) @ matrix``: ``pca`` = the principal
    axes (a fault that breaks the features' usual relations stands out on the thin
    axes); ``both`` = the standardised features and the principal axes side by side.
    (Trees are blind to each axis' scale, so whitening would add nothing to a rotation.)"""
    pca = PCA(svd_solver="full").fit(Z)
    axes = pca.components_.T
    if mode == "pca":
        return pca.mean_, axes
    return pca.mean_, np.hstack([np.eye(Z.shape[1]), axes])


@one_thread
def _fit_iforest(X: np.ndarray, random_state: int, p: dict) -> tuple[StandardScaler, Any]:
    scaler, Z = _scaled(X, random_state, p["max_fit_rows"])
    est = IsolationForest(n_estimators=int(p["n_estimators"]), max_samples=p["max_samples"],
                          max_features=p["max_features"], random_state=random_state)
    mode = p["rotate"] or "none"
    if mode not in ("none", "pca", "both"):
        raise ConfigError(f"rotate: {mode!r} is not none, pca or both")
    if mode == "none":
        return scaler, est.fit(Z.astype(np.float32))
    pm, R = rotation(Z, mode)
    est.fit(((Z - pm) @ R).astype(np.float32))
    mean, scale = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
    est.rotation_ = (mean + scale * pm, R / scale[:, None])  # in raw feature units
    return scaler, est


register(Family(
    "iforest", _fit_iforest,
    export=lambda est, scaler, p: iforest_to_onnx(est, scaler),
    reference=one_thread(lambda est, scaler, X, p: reference_scores(est, scaler, X)),
    defaults={"n_estimators": 100, "max_samples": "auto", "max_features": 1.0,
              "rotate": "none", "max_fit_rows": 100_000},
    doc="IsolationForest on standardised features (rotate: none | pca = on the principal "
        "axes | both = features and principal axes side by side); score = "
        "-decision_function (fits on ≤ max_fit_rows rows: each tree sees max_samples anyway)"))


# --- PCA: Hotelling T² and Q (SPE) ------------------------------------------------------

@one_thread
def _fit_pca(X: np.ndarray, random_state: int, p: dict) -> tuple[StandardScaler, Any]:
    scaler, Z = _scaled(X, random_state, p["max_fit_rows"])
    n = Z.shape[1]
    nc = p["n_components"]
    nc = int(nc) if isinstance(nc, int | np.integer) or float(nc) >= 1 else float(nc)
    if isinstance(nc, int) and not 1 <= nc < n:
        raise ConfigError(f"n_components: {nc} is not in 1..{n - 1} for {n} features")
    est = PCA(n_components=nc, random_state=random_state).fit(Z)
    if est.n_components_ >= n:  # keep a residual space for Q
        est = PCA(n_components=n - 1, random_state=random_state).fit(Z)
    if p["pca_kind"] not in ("spe", "t2", "combined"):
        raise ConfigError(f"pca_kind: {p['pca_kind']!r} is not spe, t2 or combined")
    lim_rows = _subsample(np.asarray(X, np.float32), 100_000, random_state)
    t2, q = pca_statistics(est, scaler, lim_rows)
    q_floor = 1e-12 * max(float(est.explained_variance_.sum()), 1e-300)
    est.t2_limit_ = float(max(np.quantile(t2, p["limit_quantile"]), 1e-12))
    est.q_limit_ = float(max(np.quantile(q, p["limit_quantile"]), q_floor, 1e-12))
    return scaler, est


register(Family(
    "pca", _fit_pca,
    export=lambda est, scaler, p: pca_to_onnx(est, scaler, kind=p["pca_kind"]),
    reference=one_thread(lambda est, scaler, X, p: reference_scores(est, scaler, X, kind=p["pca_kind"])),
    defaults={"n_components": 0.95, "pca_kind": "combined", "limit_quantile": 0.99,
              "max_fit_rows": None},
    doc="PCA on standardised features; pca_kind spe = Q, t2 = Hotelling T², combined = "
        "max(T²/T²_limit, Q/Q_limit) with each limit the limit_quantile of that statistic "
        "on the fitting rows"))


# --- GaussianMixture ---------------------------------------------------------------------

@one_thread
def _fit_gmm(X: np.ndarray, random_state: int, p: dict) -> tuple[StandardScaler, Any]:
    scaler, Z = _scaled(X, random_state, p["max_fit_rows"])
    k = int(p["n_components"])
    if len(Z) < 5 * k:
        raise ConfigError(f"gmm: {len(Z)} rows are too few for {k} components")
    est = GaussianMixture(n_components=k, covariance_type=p["covariance_type"],
                          reg_covar=float(p["reg_covar"]), max_iter=int(p["max_iter"]),
                          n_init=1, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return scaler, est.fit(Z)


register(Family(
    "gmm", _fit_gmm,
    export=lambda est, scaler, p: gmm_to_onnx(est, scaler),
    reference=one_thread(lambda est, scaler, X, p: reference_scores(est, scaler, X)),
    defaults={"n_components": 4, "covariance_type": "full", "reg_covar": 1e-3,
              "max_iter": 100, "max_fit_rows": 100_000},
    doc="GaussianMixture on standardised features; score = negative log-likelihood",
    atol=2e-4, rtol=2e-5))


# --- MLP autoencoder ---------------------------------------------------------------------

def ae_layers(n_features: int, hidden: int | None = None, bottleneck: int | None = None) -> tuple:
    """Default layer sizes (h, b, h): h = clip(2·d, 8, 64), b = max(2, d // 4)."""
    h = hidden or int(np.clip(2 * n_features, 8, 64))
    b = bottleneck or max(2, n_features // 4)
    return (h, b, h)


@one_thread
def _fit_ae(X: np.ndarray, random_state: int, p: dict) -> tuple[StandardScaler, Any]:
    scaler, Z = _scaled(X, random_state, p["max_fit_rows"])
    if p["activation"] not in ACTIVATIONS:
        raise ConfigError(f"activation: {p['activation']!r} is not one of {', '.join(ACTIVATIONS)}")
    layers = tuple(p["hidden_layer_sizes"] or ae_layers(Z.shape[1], p["hidden"], p["bottleneck"]))
    est = MLPRegressor(hidden_layer_sizes=layers, activation=p["activation"], solver="adam",
                       alpha=float(p["alpha"]), batch_size=min(512, len(Z)),
                       learning_rate_init=float(p["learning_rate_init"]),
                       max_iter=int(p["max_iter"]), tol=1e-5, n_iter_no_change=8,
                       random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return scaler, est.fit(Z, Z)


register(Family(
    "autoencoder", _fit_ae,
    export=lambda est, scaler, p: autoencoder_to_onnx(est, scaler),
    reference=one_thread(lambda est, scaler, X, p: reference_scores(est, scaler, X)),
    defaults={"hidden_layer_sizes": None, "hidden": None, "bottleneck": None,
              "activation": "tanh", "alpha": 1e-4, "learning_rate_init": 3e-3,
              "max_iter": 60, "max_fit_rows": 30_000},
    doc="MLP autoencoder (h, b, h) fitted X→X on standardised features; score = mean "
        "squared reconstruction error"))
