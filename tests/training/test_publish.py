"""Publishing into a file:// model store: verified, byte-identical, immutable, atomic."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from support.bundles import example_manifest

from sensorml.bundles.bundle import load_bundle, write_bundle
from sensorml.bundles.signing import keygen
from sensorml.errors import BundleSignatureError, ConfigError
from training.publish import export_bundle, publish, store_root


@pytest.fixture
def signed(tmp_path):
    priv, pub = keygen(tmp_path / "keys")
    m = example_manifest(n_features=2, name="pump", version="7",
                         fingerprint={"f0": {"mean": 1.0, "std": 0.5, "p01": 0.1, "p99": 2.0}},
                         metrics={"train_rows": 300, "evaluation": {
                             "data": "run.csv", "labels": "rows 400:",
                             "trip": {"precision": 0.96, "recall": 0.98, "detected": 1,
                                      "events": 1, "mean_delay_s": 4.0,
                                      "false_alarms_per_hour": 0.0}}})
    b = write_bundle(tmp_path / "bundle", m, b"model bytes", priv)
    return b, priv, pub


def test_publish_writes_the_exact_signed_files_and_release_notes(tmp_path, signed):
    b, _, pub = signed
    target = publish(b, f"file://{tmp_path / 'store'}", trusted_keys=[pub])
    assert target == tmp_path / "store" / "models" / "pump" / "7"
    for name in ("manifest.json", "model.onnx", "manifest.sig"):
        assert (target / name).read_bytes() == (b / name).read_bytes()
    assert load_bundle(target, trusted_keys=[pub]).manifest.version == "7"
    notes = (target / "RELEASE.md").read_text()
    assert notes.startswith("# pump 7")
    assert "## Evaluation on run.csv (labels: rows 400:)" in notes
    assert "| trip | 0.96 | 0.98 |" in notes and "| 1/1 | 4 | 0 |" in notes
    assert "| f0 | 1 | 0.5 | 0.1 | 2 |" in notes  # the drift fingerprint
    assert sorted(p.name for p in target.parent.iterdir()) == ["7"]  # no temp dirs left


def test_a_published_version_is_immutable_unless_forced(tmp_path, signed):
    b, priv, pub = signed
    store = tmp_path / "store"
    first = publish(b, store, trusted_keys=[pub])
    with pytest.raises(ConfigError, match="already published .*immutable"):
        publish(b, store, trusted_keys=[pub])
    m = load_bundle(b, trusted_keys=[pub]).manifest.to_dict()
    write_bundle(b, {**m, "threshold_method": "changed"}, b"model bytes", priv)
    publish(b, store, trusted_keys=[pub], force=True, notes="re-calibrated")
    assert "changed" in (first / "manifest.json").read_text()
    assert "re-calibrated" in (first / "RELEASE.md").read_text()
    assert sorted(p.name for p in first.parent.iterdir()) == ["7"]


def test_publish_refuses_what_it_cannot_trust(tmp_path, signed):
    b, _, pub = signed
    _, other = keygen(tmp_path / "other")
    with pytest.raises(BundleSignatureError):
        publish(b, tmp_path / "store", trusted_keys=[other])
    (b / "manifest.sig").unlink()
    with pytest.raises(BundleSignatureError, match="unsigned"):
        publish(b, tmp_path / "store", trusted_keys=[pub])
    t = publish(b, tmp_path / "store", allow_unsigned=True)
    assert "signed by: nobody (UNSIGNED)" in (t / "RELEASE.md").read_text()
    assert not (tmp_path / "other-store").exists()


def test_store_urls_and_unsafe_names(tmp_path, signed):
    b, priv, pub = signed
    assert store_root("file:///srv/x") == store_root("/srv/x")
    with pytest.raises(ConfigError, match="not supported by publish yet"):
        publish(b, "s3://bucket/prefix", trusted_keys=[pub])
    m = load_bundle(b, trusted_keys=[pub]).manifest.to_dict()
    write_bundle(tmp_path / "evil", {**m, "version": "../../etc"}, b"m", priv)
    with pytest.raises(ConfigError, match="cannot be a store path component"):
        publish(tmp_path / "evil", tmp_path / "store", trusted_keys=[pub])


def test_export_converts_between_directory_and_archive_keeping_the_signature(tmp_path, signed):
    b, _, pub = signed
    arc = export_bundle(b, tmp_path / "pump-7.tar.gz", trusted_keys=[pub])
    with tarfile.open(arc) as tf:
        assert sorted(tf.getnames()) == ["manifest.json", "manifest.sig", "model.onnx"]
    back = export_bundle(arc, tmp_path / "again", trusted_keys=[pub])
    for name in ("manifest.json", "model.onnx", "manifest.sig"):
        assert (back / name).read_bytes() == (b / name).read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        export_bundle(b, arc, trusted_keys=[pub])
    # an archive can be published too
    t = publish(arc, tmp_path / "store", trusted_keys=[pub])
    assert np.array_equal(np.frombuffer((t / "model.onnx").read_bytes(), np.uint8),
                          np.frombuffer(b"model bytes", np.uint8))
