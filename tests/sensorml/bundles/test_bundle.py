"""Bundles: signed round trip and every refusal a gateway relies on."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.bundles import example_manifest

from sensorml.bundles.bundle import load_bundle, unpack_bundle, write_bundle
from sensorml.bundles.signing import fingerprint, keygen, load_public_key, public_key_b64
from sensorml.edge.features import FeatureSpec
from sensorml.edge.scorer import Scorer
from sensorml.errors import (
    BundleFormatError,
    BundleHashError,
    BundleSignatureError,
    BundleSpecError,
    ConfigError,
)

N = 4


def sum_of_squares_onnx(n: int = N) -> bytes:
    """A real, tiny ONNX model: score = sum((x * w)^2)."""
    w = numpy_helper.from_array(np.arange(1, n + 1, dtype=np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Mul", ["x", "w"], ["xw"]),
             helper.make_node("Mul", ["xw", "xw"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "axes"], ["score"], keepdims=1)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
                          initializer=[w, axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return keygen(d / "a"), keygen(d / "b")


@pytest.fixture
def signed(tmp_path, keys):
    (priv, _), _ = keys
    return write_bundle(tmp_path / "bundle", example_manifest(N), sum_of_squares_onnx(), priv)


def test_round_trip_keeps_every_field_and_scores(signed, keys):
    (_, pub), _ = keys
    b = load_bundle(signed, trusted_keys=[pub])
    assert b.signed_by == fingerprint(load_public_key(pub))
    m = b.manifest
    assert (m.name, m.version, m.n_features, m.format_version) == ("example", "1", N, 1)
    assert m.thresholds == {"warn": 0.1, "alarm": 0.2, "trip": 0.3}
    assert m.score_direction == "higher_is_anomalous" and m.created.endswith("Z")
    assert m.feature_names == tuple(f"f{i}" for i in range(N))
    assert b.model_bytes == sum_of_squares_onnx()
    assert Scorer(b).score(np.ones(N, np.float32)) == pytest.approx(1 + 4 + 9 + 16)


def test_private_key_is_0600_and_never_overwritten(tmp_path):
    priv, pub = keygen(tmp_path)
    assert os.stat(priv).st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        keygen(tmp_path)


def test_tampered_manifest_byte_is_refused(signed, keys):
    (_, pub), _ = keys
    p = signed / "manifest.json"
    data = bytearray(p.read_bytes())
    i = data.index(b'"warn": 0.1') + len(b'"warn": 0.')
    data[i] = ord("9")  # raise the warn threshold behind the signer's back
    p.write_bytes(bytes(data))
    with pytest.raises(BundleSignatureError, match=r"manifest\.sig: signature does not match"):
        load_bundle(signed, trusted_keys=[pub])


def test_tampered_model_byte_is_refused(signed, keys):
    (_, pub), _ = keys
    p = signed / "model.onnx"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleHashError, match=r"model\.onnx: sha256 .* does not match"):
        load_bundle(signed, trusted_keys=[pub])


def test_missing_signature_refused_unless_allowed(signed, keys):
    (_, pub), _ = keys
    (signed / "manifest.sig").unlink()
    with pytest.raises(BundleSignatureError, match=r"manifest\.sig: missing"):
        load_bundle(signed, trusted_keys=[pub])
    assert load_bundle(signed, trusted_keys=[pub], allow_unsigned=True).signed_by is None


def test_unsigned_bundle_needs_the_allow_flag(tmp_path, keys):
    (_, pub), _ = keys
    p = write_bundle(tmp_path / "u", example_manifest(N), sum_of_squares_onnx(), None)
    with pytest.raises(BundleSignatureError, match="unsigned"):
        load_bundle(p, trusted_keys=[pub])
    assert load_bundle(p, trusted_keys=[], allow_unsigned=True).manifest.n_features == N


def test_untrusted_signer_is_named_by_fingerprint(signed, keys):
    (_, pub_a), (_, pub_b) = keys
    with pytest.raises(BundleSignatureError) as e:
        load_bundle(signed, trusted_keys=[pub_b])
    msg = str(e.value)
    assert f"untrusted key {fingerprint(load_public_key(pub_a))}" in msg
    assert fingerprint(load_public_key(pub_b)) in msg and "manifest.sig" in msg


def test_two_trusted_keys_for_rotation_and_inline_base64(tmp_path, keys):
    (priv_a, pub_a), (priv_b, pub_b) = keys
    old = write_bundle(tmp_path / "old", example_manifest(N), sum_of_squares_onnx(), priv_a)
    new = write_bundle(tmp_path / "new", example_manifest(N, version="2"), sum_of_squares_onnx(), priv_b)
    inline_b = public_key_b64(load_public_key(pub_b))
    trusted = [pub_a, inline_b]
    assert load_bundle(old, trusted_keys=trusted).signed_by == fingerprint(load_public_key(pub_a))
    assert load_bundle(new, trusted_keys=trusted).manifest.version == "2"


def test_bad_manifest_is_a_format_error_naming_the_field(tmp_path):
    m = example_manifest(N)
    del m["thresholds"]
    with pytest.raises(BundleFormatError, match="missing field 'thresholds'"):
        write_bundle(tmp_path / "x", m, sum_of_squares_onnx(), None)
    p = write_bundle(tmp_path / "y", example_manifest(N), sum_of_squares_onnx(), None)
    (p / "manifest.json").write_text('{"name": ')
    with pytest.raises(BundleFormatError, match=r"manifest\.json: invalid JSON"):
        load_bundle(p, trusted_keys=[], allow_unsigned=True)
    (p / "manifest.json").unlink()
    with pytest.raises(BundleFormatError, match=r"manifest\.json: missing"):
        load_bundle(p, trusted_keys=[], allow_unsigned=True)


def _spec_manifest(spec: FeatureSpec) -> dict:
    names = list(spec.names())
    return example_manifest(len(names), feature_spec=spec.to_dict(), feature_names=names)


def test_spec_mismatch_names_the_missing_feature(tmp_path, keys):
    (priv, pub), _ = keys
    trained = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=25600, window=4096)
    p = write_bundle(tmp_path / "b", _spec_manifest(trained), sum_of_squares_onnx(), priv)
    assert load_bundle(p, trusted_keys=[pub], expected_spec=trained).manifest.n_features == len(trained.names())
    config = FeatureSpec(channels=("ax", "ay"), sample_rate=25600, window=4096)
    with pytest.raises(BundleSpecError) as e:
        load_bundle(p, trusted_keys=[pub], expected_spec=config)
    msg = str(e.value)
    n3, n2 = len(trained.names()), len(config.names())
    assert f"bundle expects {n3} features, config produces {n2}: missing az." in msg
    assert "manifest.json" in msg and "\n" not in msg
    slower = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=12800, window=4096)
    with pytest.raises(BundleSpecError, match="sample_rate: bundle 25600, config 12800"):
        load_bundle(p, trusted_keys=[pub], expected_spec=slower.to_dict())


def test_archive_round_trip_and_safe_unpack(tmp_path, keys):
    (priv, pub), _ = keys
    arc = write_bundle(tmp_path / "b.tar.gz", example_manifest(N), sum_of_squares_onnx(), priv)
    assert load_bundle(arc, trusted_keys=[pub]).manifest.name == "example"
    d = unpack_bundle(arc, tmp_path / "unpacked")
    assert sorted(os.listdir(d)) == ["manifest.json", "manifest.sig", "model.onnx"]
    assert load_bundle(d, trusted_keys=[pub]).signed_by is not None


def _tar(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in entries:
            tf.addfile(info, io.BytesIO(data.get(info.name, b"")) if info.isfile() else None)
    return path


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def test_archive_escaping_entry_link_and_huge_file_are_refused(tmp_path, signed, keys):
    (_, pub), _ = keys
    files = {n: (signed / n).read_bytes() for n in ("manifest.json", "model.onnx", "manifest.sig")}
    base = [_file(n, d) for n, d in files.items()]

    evil = _file("../evil.txt", b"x")
    p = _tar(tmp_path / "escape.tar.gz", [*base, evil], {**files, "../evil.txt": b"x"})
    with pytest.raises(BundleFormatError, match=r"'\.\./evil\.txt' escapes the bundle directory"):
        load_bundle(p, trusted_keys=[pub])
    assert not (tmp_path / "evil.txt").exists()

    link = tarfile.TarInfo("model.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    p = _tar(tmp_path / "link.tar.gz", [base[0], link, base[2]], files)
    with pytest.raises(BundleFormatError, match="is a link or special file"):
        load_bundle(p, trusted_keys=[pub])

    huge = b"\0" * (5 << 20)
    p = _tar(tmp_path / "huge.tar.gz", [*base, _file("notes.txt", huge)], {**files, "notes.txt": huge})
    with pytest.raises(BundleFormatError, match="over the .* byte limit"):
        load_bundle(p, trusted_keys=[pub])


def test_write_replaces_an_existing_bundle_without_leftovers(tmp_path, keys):
    (priv, pub), _ = keys
    write_bundle(tmp_path / "b", example_manifest(N), sum_of_squares_onnx(), priv)
    write_bundle(tmp_path / "b", example_manifest(N, version="7"), sum_of_squares_onnx(), priv)
    assert load_bundle(tmp_path / "b", trusted_keys=[pub]).manifest.version == "7"
    assert os.listdir(tmp_path) == ["b"]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["version"] == "7"
    assert onnx.load_from_string((tmp_path / "b" / "model.onnx").read_bytes()).graph.name == "t"


def test_directory_entries_must_be_regular_files(signed, keys):
    """A FIFO (or device) in place of model.onnx is refused instead of blocking the reader."""
    (_, pub), _ = keys
    (signed / "model.onnx").unlink()
    os.mkfifo(signed / "model.onnx")
    with pytest.raises(BundleFormatError, match=r"model\.onnx: not a regular file"):
        load_bundle(signed, trusted_keys=[pub])


def test_garbage_or_truncated_archive_is_a_format_error(tmp_path, keys):
    (priv, pub), _ = keys
    arc = write_bundle(tmp_path / "b.tar.gz", example_manifest(N), sum_of_squares_onnx(), priv)
    data = arc.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tar.gz").write_bytes(os.urandom(4096))
    for name in ("cut.tar.gz", "junk.tar.gz"):
        with pytest.raises(BundleFormatError, match=name):
            load_bundle(tmp_path / name, trusted_keys=[pub])
    with pytest.raises(BundleFormatError, match="bundle not found"):
        load_bundle(tmp_path / "absent", trusted_keys=[pub])
