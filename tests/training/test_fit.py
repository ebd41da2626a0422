"""Fitting end to end: healthy data in, a signed bundle out that ranks faults above health."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sensorml.bundle import load_bundle
from sensorml.errors import ConfigError
from sensorml.scorer import Scorer
from sensorml.signing import keygen
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


@pytest.mark.parametrize("model", ["iforest", "pca"])
def test_fit_writes_a_signed_bundle_that_scores_faults_higher(tmp_path, keys, model):
    priv, pub = keys
    table = FeatureTable(healthy(2000, 1), NAMES, {"names": list(NAMES)}, "synthetic")
    bad = planted(200, 3)
    r = fit_bundle(table, model=model, out=tmp_path / "b", key=priv, name="pump", version="4",
                   anomalies=bad, random_state=0)
    b = load_bundle(r.bundle_path, trusted_keys=[pub], expected_spec={"names": list(NAMES)})
    m = b.manifest
    assert m.thresholds["warn"] < m.thresholds["alarm"] < m.thresholds["trip"]
    assert "held-out healthy" in m.threshold_method
    assert set(m.fingerprint) == set(NAMES)
    assert set(m.fingerprint["ax.rms"]) == {"mean", "std", "min", "max", "p01", "p99"}
    assert m.metrics["parity_max_abs_diff"] <= 1e-4 and r.parity["mismatches"] == 0
    assert m.training["rows"] == 2000 and len(m.training["data_sha256"]) == 64
    s = Scorer(b)
    fresh = healthy(500, 11)
    good_scores = np.array([s.score(x) for x in fresh])
    bad_scores = np.array([s.score(x) for x in bad])
    auc = (bad_scores[:, None] > good_scores[None, :]).mean()  # P(fault ranks above health)
    assert auc > 0.95
    assert (bad_scores > m.thresholds["warn"]).mean() > (0.9 if model == "pca" else 0.3)
    assert (good_scores > m.thresholds["alarm"]).mean() < 0.02
    assert m.metrics["anomalies_above_warn"] == pytest.approx((bad_scores > m.thresholds["warn"]).mean())


def test_fit_is_deterministic_for_a_seed(tmp_path):
    table = FeatureTable(healthy(800, 2), NAMES, {"names": list(NAMES)}, "synthetic")
    a = fit_bundle(table, out=None, key=None, name="p", version="1", random_state=5)
    b = fit_bundle(table, out=None, key=None, name="p", version="1", random_state=5)
    assert a.onnx_bytes == b.onnx_bytes and a.manifest["thresholds"] == b.manifest["thresholds"]


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
