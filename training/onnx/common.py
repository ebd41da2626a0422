"""What every family's graph shares: names, opsets, the model builder, the scaler's
centre as a float32 pair, scoring many rows through onnxruntime and the parity check."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError

__all__ = ["OPSET", "INPUT_NAME", "OUTPUT_NAME", "ParityError", "build_model", "centre_nodes",
           "onnx_scores", "parity", "scaler_arrays"]

OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME, OUTPUT_NAME = "x", "score"


class ParityError(ModelError):
    """The exported graph does not reproduce scikit-learn's scores."""


def _io(n_features: int):
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1])
    return x, y


def _model(nodes, inits, n_features: int, name: str, doc: str) -> onnx.ModelProto:
    x, y = _io(n_features)
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSET.items()],
        producer_name="sensorml.training", doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def centre_nodes(centre: np.ndarray, out: str = "d") -> tuple[list, list]:
    """``x - centre`` with the centre as a float32 pair (hi + lo).

    ``x - hi`` is exact for x near hi, so features whose spread is tiny next to their
    mean (60.00 ± 0.01 °C) keep their precision; ``- lo`` adds back what float32 lost.
    """
    centre = np.asarray(centre, np.float64)
    hi = centre.astype(np.float32)
    lo = (centre - hi.astype(np.float64)).astype(np.float32)
    inits = [numpy_helper.from_array(hi, "centre_hi"), numpy_helper.from_array(lo, "centre_lo")]
    nodes = [helper.make_node("Sub", [INPUT_NAME, "centre_hi"], [out + "_hi"]),
             helper.make_node("Sub", [out + "_hi", "centre_lo"], [out])]
    return nodes, inits


def scaler_arrays(scaler: StandardScaler | None, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The scaler's mean and scale as float64 (zeros and ones without a scaler)."""
    mean = scaler.mean_ if scaler is not None and scaler.mean_ is not None else np.zeros(n_features)
    scale = scaler.scale_ if scaler is not None and scaler.scale_ is not None else np.ones(n_features)
    return np.asarray(mean, np.float64), np.asarray(scale, np.float64)


def build_model(nodes, inits, n_features: int, name: str, doc: str) -> onnx.ModelProto:
    """A checked model with the shared input/output names and opsets."""
    return _model(nodes, inits, n_features, name, doc)


def onnx_scores(model_bytes: bytes, X: np.ndarray, *, batch: int = 65536) -> np.ndarray:
    """Scores of many rows through onnxruntime (one session, one thread, in batches)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = np.empty(len(X), np.float64)
    for i in range(0, len(X), batch):
        part = np.ascontiguousarray(X[i:i + batch], np.float32)
        out[i:i + len(part)] = np.asarray(sess.run(None, {name: part})[0]).reshape(len(part), -1)[:, 0]
    return out


def parity(ref: np.ndarray, got: np.ndarray, thresholds: dict | None = None, *,
           atol: float = 1e-4, rtol: float = 1e-5) -> dict:
    """Max abs/rel diff, rows off by more than ``atol + rtol*|ref|``, verdict flips per threshold.

    A flip is a row that scikit-learn and onnxruntime put on different sides of a
    threshold although its reference score is further than the tolerance from it; rows
    within the tolerance of a threshold (e.g. a tree ensemble's repeated score values,
    one of which a quantile threshold sits on) are counted as ``ties_at_threshold``.
    """
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    diff = np.abs(ref - got)
    out = {"rows": int(len(diff)), "max_abs_diff": float(diff.max(initial=0.0)),
           "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)),
           "mismatches": int((~(diff <= atol + rtol * np.abs(ref))).sum()), "verdict_flips": 0,
           "ties_at_threshold": 0}
    for t in (thresholds or {}).values():
        flip = (ref > t) != (got > t)
        tie = np.abs(ref - t) <= atol + rtol * abs(t)
        out["verdict_flips"] += int((flip & ~tie).sum())
        out["ties_at_threshold"] += int((flip & tie).sum())
    return out
