"""Fitting end to end: healthy data in, a signed bundle out that ranks faults above health."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sensorml.bundles.bundle import load_bundle
from sensorml.bundles.signing import keygen
from sensorml.edge.scorer import Scorer
from sensorml.errors import ConfigError
from training.cli import main
from training.fit import FeatureTable, calibrate, fit_bundle, load_features

F = 10
NAMES = tuple(f"{c}.{f}" for c in ("ax", "ay") for f in ("rms", "peak", "kurtosis", "band_0", "band_1"))


def healthy(n: int, seed: int) -> np.ndarray:
    """Correlated features from 3 latent machine states, on realistic scales and offsets."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(3, F))
    X = rng.normal(size=(n, 3)) @ mix + 0.1 * rng.normal(size=(n, F))
    return (X * np.geomspace(0.01, 50, F) + np.linspace(0, 60, F)).astype(np.float32)


def planted(n: int, seed: int) -> np.ndarray:
    """Faults: a healthy row with 3-5 features raised by 5 sigma (as a bearing fault raises
    rms, peaks and some bands of one channel together, breaking their usual relation)."""
    rng = np.random.default_rng(seed)
    X = healthy(n, seed + 1)
    ref = healthy(2000, 5)
    for row in X:
        for j in rng.choice(F, size=rng.integers(3, 6), replace=False):
            row[j] += 5 * ref[:, j].std()
    return X


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("model", ["iforest", "pca", "gmm", "autoencoder"])
def test_fit_writes_a_signed_bundle_that_scores_faults_higher(tmp_path, keys, model):
    priv, pub = keys
    spec = {"names": list(NAMES), "window_period_s": 60.0}  # a table, one row per minute
    table = FeatureTable(healthy(2000, 1), NAMES, spec, "synthetic")
    bad = planted(200, 3)
    # trees on raw features miss faults that break correlations (test_check_detector)
    extra = {"rotate": "pca"} if model == "iforest" else {}
    r = fit_bundle(table, model=model, out=tmp_path / "b", key=priv, name="pump", version="4",
                   anomalies=bad, random_state=0, **extra)
    b = load_bundle(r.bundle_path, trusted_keys=[pub], expected_spec=spec)
    m = b.manifest
    assert m.model_family == model
    assert m.thresholds["warn"] < m.thresholds["alarm"] < m.thresholds["trip"]
    assert "held-out healthy" in m.threshold_method and "window period 60 s" in m.threshold_method
    assert m.extra["calibration"]["target_per_window"]["warn"] == pytest.approx(60 / 86400)
    assert m.training["holdout"] == {"split": "tail", "share": 0.25}
    assert set(m.fingerprint) == set(NAMES)
    assert set(m.fingerprint["ax.rms"]) == {"mean", "std", "min", "max", "p01", "p99"}
    assert r.parity["mismatches"] == 0 and r.parity["verdict_flips"] == 0
    assert r.parity["rows"] == 500 + 200  # every held-out row and every known-bad row
    assert m.training["rows"] == 2000 and len(m.training["data_sha256"]) == 64
    s = Scorer(b)
    fresh = healthy(500, 11)
    good_scores = np.array([s.score(x) for x in fresh])
    bad_scores = np.array([s.score(x) for x in bad])
    auc = (bad_scores[:, None] > good_scores[None, :]).mean()  # P(fault ranks above health)
    assert auc > 0.95
    assert (bad_scores > m.thresholds["warn"]).mean() > 0.9
    assert (good_scores > m.thresholds["alarm"]).mean() < 0.01
    assert m.metrics["anomalies_above_warn"] == pytest.approx((bad_scores > m.thresholds["warn"]).mean())


def test_fit_is_deterministic_for_a_seed(tmp_path):
    table = FeatureTable(healthy(800, 2), NAMES, {"names": list(NAMES)}, "synthetic")
    a = fit_bundle(table, out=None, key=None, name="p", version="1", random_state=5)
    b = fit_bundle(table, out=None, key=None, name="p", version="1", random_state=5)
    assert a.onnx_bytes == b.onnx_bytes and a.manifest["thresholds"] == b.manifest["thresholds"]


def test_holdout_tail_is_the_last_rows_and_random_is_seeded():
    """The default holdout is the end of the recording: a model fitted on the start
    and calibrated on the end sees the drift a random holdout would hide."""
    X = healthy(1000, 3)
    X[750:] += np.float32(0.5) * X[:750].std(axis=0)  # the last quarter drifted a little
    table = FeatureTable(X, NAMES, {"names": list(NAMES)}, "drifting")
    tail = fit_bundle(table, model="pca", out=None, key=None, name="p", version="1")
    rand = fit_bundle(table, model="pca", out=None, key=None, name="p", version="1",
                      holdout="random")
    assert tail.manifest["metrics"]["train_rows"] == 750
    np.testing.assert_allclose(tail.scaler.mean_, X[:750].mean(axis=0), rtol=1e-4, atol=1e-4)
    assert rand.manifest["training"]["holdout"]["split"] == "random"
    # the drift lands in the held-out scores, so the tail thresholds are more cautious
    assert tail.manifest["thresholds"]["warn"] > rand.manifest["thresholds"]["warn"]


def test_unknown_family_or_option_is_a_config_error():
    table = FeatureTable(healthy(200, 2), NAMES, {"names": list(NAMES)}, "synthetic")
    with pytest.raises(ConfigError, match="'svm' is not one of iforest, pca, gmm, autoencoder"):
        fit_bundle(table, model="svm", out=None, key=None, name="p", version="1")
    with pytest.raises(ConfigError, match="unknown option.*n_trees"):
        fit_bundle(table, out=None, key=None, name="p", version="1", n_trees=5)
    with pytest.raises(ConfigError, match="pca_kind: 'q' is not"):
        fit_bundle(table, model="pca", out=None, key=None, name="p", version="1", pca_kind="q")


def test_calibration_rule_is_ordered_even_for_flat_scores():
    th, how = calibrate(np.full(100, 0.25))
    assert th["warn"] < th["alarm"] < th["trip"] and "q0.99" in how


def test_cli_fit_from_npz_then_verify(tmp_path, keys, capsys):
    priv, pub = keys
    npz = tmp_path / "healthy.npz"
    np.savez(npz, X=healthy(600, 4), names=np.array(NAMES),
             feature_spec=np.array(json.dumps({"names": list(NAMES)})))
    out = tmp_path / "bundle"
    argv = ["fit", "--features", str(npz), "--model", "iforest", "--out", str(out),
            "--key", str(priv), "--name", "pump", "--version", "9", "--n-estimators", "50"]
    assert main(argv) == 0
    assert "0 mismatches" in capsys.readouterr().out
    assert main(["verify", str(out), "--trusted", str(pub)]) == 0
    assert "pump 9" in capsys.readouterr().out


def test_cli_user_mistakes_are_one_line_exit_2(tmp_path, capsys):
    npz = tmp_path / "short.npz"
    np.savez(npz, X=healthy(10, 4), names=np.array(NAMES))
    assert main(["fit", "--features", str(npz), "--out", str(tmp_path / "b"), "--unsigned",
                 "--name", "p", "--version", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "10 rows; need at least 50" in err and "\n" not in err
    assert main(["fit", "--features", str(npz), "--out", str(tmp_path / "b"),
                 "--name", "p", "--version", "1"]) == 2
    assert "--key: required" in capsys.readouterr().err


def test_bad_feature_file_names_the_problem(tmp_path):
    npz = tmp_path / "nan.npz"
    X = healthy(100, 1)
    X[7, 3] = np.nan
    np.savez(npz, X=X, names=np.array(NAMES))
    with pytest.raises(ConfigError, match="first at row 7, feature ax.band_0"):
        load_features(npz)
    np.savez(npz, X=healthy(100, 1), names=np.array(NAMES[:-1]))
    with pytest.raises(ConfigError, match="10 columns but 9 names"):
        load_features(npz)
