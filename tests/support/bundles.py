"""Tiny real bundles for tests: a minimal valid manifest and small ONNX graphs that
onnxruntime runs (no training stack). The signed z-score bundle fitted on a simulated
run is :func:`training.simdata.zscore_bundle` (the soak and the benchmarks use it too).

>>> m = example_manifest(2, version="7")
>>> m["n_features"], m["feature_names"], m["version"]
(2, ['f0', 'f1'], '7')
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["example_manifest", "linear_onnx"]


def example_manifest(n_features: int = 3, **over: Any) -> dict:
    """A minimal valid manifest for ``n_features`` features ``f0, f1, ...`` (without
    ``model_sha256``: :func:`~sensorml.bundles.bundle.write_bundle` adds it)."""
    names = [f"f{i}" for i in range(n_features)]
    m = {
        "name": "example", "version": "1", "feature_spec": {"names": names},
        "feature_names": names, "input_name": "x", "output_name": "score",
        "thresholds": {"warn": 0.1, "alarm": 0.2, "trip": 0.3},
        "threshold_method": "fixed for the example", "fingerprint": {}, "metrics": {},
        "model_family": "example", "n_features": n_features,
        "training": {"rows": 0, "fitted_at": "1970-01-01T00:00:00Z", "data_sha256": ""},
    }
    m.update(over)
    return m


def linear_onnx(n: int, weight: float | np.ndarray = 0.0, bias: float = 0.0) -> bytes:
    """``score = x · w + b`` as a real ONNX graph (input ``x`` [batch, n], output
    ``score`` [batch, 1]); ``weight`` a number for every feature, or one per feature."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.broadcast_to(np.asarray(weight, np.float32), (n,)).reshape(n, 1).copy(), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["score"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()
