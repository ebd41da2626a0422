"""Scorer on real onnxruntime: scores, and the errors the fast path relies on."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.bundles import example_manifest

from sensorml.bundles.bundle import load_bundle, write_bundle
from sensorml.edge.scorer import Scorer
from sensorml.errors import ModelError

N = 5
W = np.array([1.0, -2.0, 0.5, 3.0, 0.25], np.float32)


def linear_onnx(n: int = N, declared: int | None = None) -> bytes:
    """score = x @ W, a real ONNX graph (``declared`` sets the input width in the graph)."""
    w = numpy_helper.from_array(W[:n].reshape(n, 1), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["score"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, declared or n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def bundle(tmp_path, onnx_bytes: bytes | None = None, **over):
    p = write_bundle(tmp_path / "b", example_manifest(N, **over), onnx_bytes or linear_onnx(), None)
    return load_bundle(p, trusted_keys=[], allow_unsigned=True)


def test_scores_match_the_graph_for_float32_and_float64_input(tmp_path):
    s = Scorer(bundle(tmp_path))
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=N).astype(np.float32)
        assert s.score(x) == pytest.approx(float(x @ W), rel=1e-6, abs=1e-6)
        assert s.score(x.astype(np.float64)) == pytest.approx(float(x @ W), rel=1e-6, abs=1e-6)
    X = rng.normal(size=(50, N)).astype(np.float32)
    np.testing.assert_allclose(s.score_batch(X), [s.score(r) for r in X], rtol=1e-6)


def test_wrong_width_gives_both_numbers(tmp_path):
    s = Scorer(bundle(tmp_path))
    with pytest.raises(ModelError, match=f"expects {N} features, got {N - 1}"):
        s.score(np.zeros(N - 1, np.float32))
    with pytest.raises(ModelError, match=f"expects {N} features per row, got shape"):
        s.score_batch(np.zeros((3, N + 2), np.float32))


def test_non_finite_feature_is_named(tmp_path):
    s = Scorer(bundle(tmp_path))
    x = np.zeros(N, np.float32)
    x[3] = np.nan
    with pytest.raises(ModelError, match="non-finite feature value.*: f3"):
        s.score(x)


def test_model_that_contradicts_its_manifest_is_refused(tmp_path):
    with pytest.raises(ModelError, match="input_name 'features' is not an input"):
        Scorer(bundle(tmp_path, input_name="features"))
    with pytest.raises(ModelError, match=r"does not take \[1, 5\]"):
        Scorer(bundle(tmp_path, onnx_bytes=linear_onnx(4, declared=4)))
    with pytest.raises(ModelError, match="cannot be loaded by onnxruntime"):
        Scorer(bundle(tmp_path, onnx_bytes=b"not onnx"))
