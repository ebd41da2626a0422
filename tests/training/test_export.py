"""Compact ONNX exports reproduce scikit-learn's scores exactly enough to never flip a verdict."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

from training.onnx import reference_scores
from training.onnx.common import onnx_scores, parity
from training.onnx.iforest import iforest_to_onnx
from training.onnx.pca import pca_to_onnx

F = 16


@pytest.fixture(scope="module")
def data():
    """Features on very different scales and offsets, as real vibration features are."""
    rng = np.random.default_rng(7)
    scale = np.geomspace(1e-3, 3e3, F)
    offset = rng.uniform(-100, 100, F)
    X = (rng.normal(size=(3000, F)) * scale + offset).astype(np.float32)
    test = (rng.normal(size=(3000, F)) * scale * 2 + offset).astype(np.float32)
    return X, test, StandardScaler().fit(X)


def boundary_rows(model, base: np.ndarray) -> np.ndarray:
    """Rows sitting exactly on a folded split threshold, and one float32 step above it."""
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    att = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    modes = np.array(att["nodes_modes"])
    splits = np.flatnonzero(modes == b"BRANCH_LEQ")
    feats = np.array(att["nodes_featureids"])[splits]
    vals = np.array(att["nodes_values"], np.float32)[splits]
    rng = np.random.default_rng(1)
    pick = rng.choice(len(splits), size=1000, replace=False)
    rows = base[rng.integers(0, len(base), 2000)].copy()
    rows[np.arange(1000), feats[pick]] = vals[pick]
    rows[1000 + np.arange(1000), feats[pick]] = np.nextafter(vals[pick], np.float32(np.inf))
    return rows


@pytest.mark.parametrize("fold", [True, False])
def test_iforest_graph_matches_sklearn_on_random_and_boundary_rows(data, fold):
    X, test, scaler = data
    forest = IsolationForest(n_estimators=60, random_state=3).fit(scaler.transform(X))
    model = iforest_to_onnx(forest, scaler, fold_scaler=fold)
    assert sum(n.op_type == "TreeEnsembleRegressor" for n in model.graph.node) == 1
    assert len(model.graph.node) == (4 if fold else 6)
    rows = np.vstack([test, X[:1000], boundary_rows(model, X)])
    ref = reference_scores(forest, scaler, rows)
    got = onnx_scores(model.SerializeToString(), rows)
    np.testing.assert_allclose(ref, -forest.decision_function(scaler.transform(rows)))
    th = {q: float(np.quantile(ref, q)) for q in (0.5, 0.9, 0.99)}
    p = parity(ref, got, th)
    assert p["rows"] >= 6000 and p["mismatches"] == 0 and p["verdict_flips"] == 0, p
    assert p["max_abs_diff"] < 1e-5, p


def test_iforest_with_feature_subsampling_and_small_samples(data):
    X, test, scaler = data
    forest = IsolationForest(n_estimators=30, max_samples=64, max_features=0.5,
                             random_state=0).fit(scaler.transform(X))
    model = iforest_to_onnx(forest, scaler)
    ref = reference_scores(forest, scaler, test)
    p = parity(ref, onnx_scores(model.SerializeToString(), test))
    assert p["mismatches"] == 0 and p["max_abs_diff"] < 1e-5, p


def test_iforest_score_is_higher_for_outliers(data):
    X, _, scaler = data
    forest = IsolationForest(n_estimators=50, random_state=0).fit(scaler.transform(X))
    b = iforest_to_onnx(forest, scaler).SerializeToString()
    far = X[:100] + (50 * X.std(axis=0)).astype(np.float32)
    assert onnx_scores(b, far).min() > onnx_scores(b, X[:100]).max()


@pytest.mark.parametrize("kind", ["spe", "t2"])
def test_pca_graph_matches_numpy_reference(data, kind):
    X, test, scaler = data
    pca = PCA(n_components=6, random_state=0).fit(scaler.transform(X))
    model = pca_to_onnx(pca, scaler, kind=kind)
    assert [n.op_type for n in model.graph.node] == ["Sub", "Sub", "MatMul", "Mul", "ReduceSum"]
    ref = reference_scores(pca, scaler, test, kind=kind)
    if kind == "spe":  # the reference is scikit-learn's own reconstruction
        z = scaler.transform(test.astype(np.float64))
        recon = pca.inverse_transform(pca.transform(z))
        np.testing.assert_allclose(ref, ((z - recon) ** 2).sum(axis=1), rtol=1e-4, atol=1e-6)
    got = onnx_scores(model.SerializeToString(), test)
    p = parity(ref, got, {"q99": float(np.quantile(ref, 0.99))})
    assert p["mismatches"] == 0 and p["max_rel_diff"] < 1e-5 and p["verdict_flips"] == 0, p


def test_folded_threshold_is_the_exact_float32_boundary():
    """For every split, x <= T in raw float32 units iff scikit-learn's scaled x <= t."""
    from training.onnx.iforest import _fold_thresholds

    rng = np.random.default_rng(3)
    n = 8
    raw = (rng.normal(size=(500, n)) * np.geomspace(1e-4, 1e4, n) + rng.uniform(-1e3, 1e3, n))
    scaler = StandardScaler().fit(raw.astype(np.float32))
    feats = rng.integers(0, n, 5000)
    thr = rng.normal(size=5000) * 2
    T = _fold_thresholds(scaler, feats, thr, n)
    assert T.dtype == np.float32

    def scaled(v):
        m = np.zeros((len(v), n), np.float32)
        m[np.arange(len(v)), feats] = v
        return scaler.transform(m)[np.arange(len(v)), feats]

    assert (scaled(T) <= thr).all()
    assert not (scaled(np.nextafter(T, np.float32(np.inf))) <= thr).any()
