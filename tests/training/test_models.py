"""Every model family: its compact ONNX graph gives scikit-learn's scores on thousands of
rows, never flips a verdict at calibrated thresholds, and means what its docs say."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from training.calibrate import calibrate_thresholds
from training.checks import plant_shift
from training.models import FAMILIES, family_params, get_family
from training.onnx.common import OPSET, onnx_scores, parity
from training.onnx.pca import pca_statistics

F = 16


@pytest.fixture(scope="module")
def data():
    """Correlated features on very different scales and offsets, one of them 1000 ± 0.001
    (a float32 trap), and check rows: fresh healthy, twice as wide, and far outliers."""
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(5, F))
    scale = np.geomspace(1e-3, 3e3, F)
    offset = rng.uniform(-100, 100, F)
    offset[0] = 1000.0

    def rows(n, spread=1.0):
        z = rng.normal(size=(n, 5)) @ mix + 0.3 * rng.normal(size=(n, F))
        return (z * spread * scale + offset).astype(np.float32)

    far = rows(200) + (8 * scale * np.sign(rng.normal(size=(200, F)))).astype(np.float32)
    return rows(3000), np.vstack([rows(2000), rows(1000, 2.0), far])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_matches_sklearn_on_3200_rows_without_verdict_flips(data, family):
    X, test = data
    fam = get_family(family)
    p = family_params(fam, {"max_iter": 30})  # gmm/autoencoder: parity needs no convergence
    scaler, est = fam.fit(X, 0, p)
    model = fam.export(est, scaler, p)
    assert {o.domain or "": o.version for o in model.opset_import} == OPSET
    assert model.graph.input[0].name == "x" and model.graph.output[0].name == "score"
    assert len(model.graph.node) <= 20
    ref = fam.reference(est, scaler, test, p)
    got = onnx_scores(model.SerializeToString(), test)
    # thresholds as fit_bundle would calibrate them, on the healthy part
    th = calibrate_thresholds(got[:2000], window_period_s=60.0).thresholds
    th |= {f"q{q}": float(np.quantile(ref[:2000], q)) for q in (0.5, 0.9, 0.99)}
    par = parity(ref, got, th, atol=fam.atol, rtol=fam.rtol)
    assert par["rows"] == 3200 and par["mismatches"] == 0 and par["verdict_flips"] == 0, par
    assert par["max_abs_diff"] < 1e-5 * (got.max() - got.min()) + fam.atol, par
    assert got[-200:].min() > got[:2000].max()  # far outliers above every healthy row


def test_pca_combined_is_the_larger_of_t2_and_q_over_their_limits(data):
    X, test = data
    fam = get_family("pca")
    p = family_params(fam, {"n_components": 5})
    scaler, pca = fam.fit(X, 0, p)
    t2, q = pca_statistics(pca, scaler, X)
    assert pca.t2_limit_ == pytest.approx(np.quantile(t2, 0.99))
    assert pca.q_limit_ == pytest.approx(np.quantile(q, 0.99))
    t2, q = pca_statistics(pca, scaler, test)
    got = onnx_scores(fam.export(pca, scaler, p).SerializeToString(), test)
    np.testing.assert_allclose(got, np.maximum(t2 / pca.t2_limit_, q / pca.q_limit_), rtol=1e-4)
    # 1.0 = as rare as the healthy 1 % of the fitting rows, for either statistic
    assert 0.005 < (got[:2000] > 1.0).mean() < 0.03
    for kind, stat in (("t2", t2), ("spe", q)):
        g = onnx_scores(fam.export(pca, scaler, p | {"pca_kind": kind}).SerializeToString(), test)
        np.testing.assert_allclose(g, stat, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_gmm_graph_is_minus_score_samples_for_every_covariance_type(data, cov):
    X, test = data
    fam = get_family("gmm")
    p = family_params(fam, {"covariance_type": cov, "n_components": 3})
    scaler, gmm = fam.fit(X, 0, p)
    model = fam.export(gmm, scaler, p)
    ops = [n.op_type for n in model.graph.node]
    assert "ReduceLogSumExp" in ops and ops.count("MatMul") == 1
    ref = -gmm.score_samples(scaler.transform(test.astype(np.float64)))
    got = onnx_scores(model.SerializeToString(), test)
    par = parity(ref, got, atol=fam.atol, rtol=fam.rtol)
    assert par["mismatches"] == 0, par


def test_autoencoder_graph_is_mean_squared_reconstruction_error(data):
    X, test = data
    fam = get_family("autoencoder")
    p = family_params(fam, {"activation": "relu", "hidden": 12, "bottleneck": 3})
    scaler, mlp = fam.fit(X, 0, p)
    assert mlp.hidden_layer_sizes == (12, 3, 12)
    model = fam.export(mlp, scaler, p)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 4 and ops.count("Relu") == 3 and ops[-1] == "ReduceMean"
    z = scaler.transform(test.astype(np.float64))
    ref = ((z - mlp.predict(z)) ** 2).mean(axis=1)
    got = onnx_scores(model.SerializeToString(), test)
    assert parity(ref, got, atol=fam.atol, rtol=fam.rtol)["mismatches"] == 0


def test_rotated_iforest_rotates_in_float64_and_sees_broken_correlations(data):
    """A fault that breaks the features' usual relation without leaving their ranges is
    invisible to axis-aligned trees on raw features, plain to trees on principal axes."""
    X, test = data
    fam = get_family("iforest")
    healthy = test[:2000]
    # 3 features raised by 2σ: most rows stay inside every feature's healthy range
    fault = plant_shift(healthy[:500], X.std(axis=0), n_shifted=3, shift_sigma=2.0, seed=1)
    inside = (np.abs(fault - X.mean(0)) <= np.abs(X - X.mean(0)).max(0)).all(axis=1)
    assert inside.mean() > 0.8
    seen = {}
    for rotate in ("none", "pca"):
        p = family_params(fam, {"rotate": rotate})
        scaler, est = fam.fit(X, 0, p)
        model = fam.export(est, scaler, p)
        if rotate == "pca":
            assert [n.op_type for n in model.graph.node][:4] == ["Cast", "Sub", "MatMul", "Cast"]
        b = model.SerializeToString()
        warn = np.quantile(onnx_scores(b, healthy), 0.99)
        seen[rotate] = (onnx_scores(b, fault) > warn).mean()
    assert seen["pca"] > 0.9 and seen["none"] < 0.5, seen


def test_models_accept_any_feature_matrix_width():
    """Lagged or windowed table features are just more columns; two columns work too."""
    rng = np.random.default_rng(0)
    for n in (2, 40):
        X = (rng.normal(size=(600, n)) @ rng.normal(size=(n, n))).astype(np.float32)
        for name, fam in FAMILIES.items():
            p = family_params(fam, {"max_iter": 5})
            scaler, est = fam.fit(X, 0, p)
            m = onnx.load_from_string(fam.export(est, scaler, p).SerializeToString())
            assert m.graph.input[0].type.tensor_type.shape.dim[1].dim_value == n
            assert np.isfinite(onnx_scores(m.SerializeToString(), X[:50])).all(), name
