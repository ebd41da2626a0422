"""Score one feature vector with a bundle's ONNX model: higher is more anomalous, always.

The session runs on one thread, sequentially, with graph optimisations on, and is
warmed up at construction so the first real window does not pay for lazy
initialisation. Per call: one dtype/shape check, one copy into a pre-allocated
``[1, n]`` buffer, ``session.run`` with pre-bound names. (IOBinding and
``run_with_ort_values`` were measured slower here: ~30 µs against ~5.6 µs.)
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort

from sensorml.errors import ModelError

__all__ = ["Scorer", "session_options"]

_dot = np.dot  # x·x is NaN/inf iff some x is (or it overflowed): the cheapest check (~0.4 µs)


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, sequential, all graph optimisations."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class Scorer:
    """``Scorer(bundle).score(x) -> float`` for ``x`` float32 ``[n_features]``.

    A wrong-width input, a non-finite feature (when ``check_finite``) or a model that
    does not match its manifest raises :class:`~sensorml.errors.ModelError`.
    """

    def __init__(self, bundle, *, warmup: int = 5, check_finite: bool = True) -> None:
        man = bundle.manifest
        self.name, self.version = man.name, man.version
        self.n_features = n = int(man.n_features)
        self.feature_names = tuple(man.feature_names)
        self.check_finite = check_finite
        try:
            self._sess = ort.InferenceSession(bundle.model_bytes, session_options(),
                                              providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad graph
            raise ModelError(f"{bundle.path}: model.onnx cannot be loaded by onnxruntime: "
                             f"{str(e).splitlines()[0][:200]}") from None
        inputs = {i.name: i for i in self._sess.get_inputs()}
        outputs = {o.name for o in self._sess.get_outputs()}
        if man.input_name not in inputs:
            raise ModelError(f"{bundle.path}: manifest input_name {man.input_name!r} is not an "
                             f"input of model.onnx (inputs: {', '.join(inputs)})")
        if man.output_name not in outputs:
            raise ModelError(f"{bundle.path}: manifest output_name {man.output_name!r} is not an "
                             f"output of model.onnx (outputs: {', '.join(sorted(outputs))})")
        shape = inputs[man.input_name].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n):
            raise ModelError(f"{bundle.path}: model.onnx input shape {shape} does not take "
                             f"[1, {n}] as the manifest's n_features says")
        self._buf = np.zeros((1, n), np.float32)
        self._row = self._buf[0]
        self._feed = {man.input_name: self._buf}
        self._outs = [man.output_name]
        self._run = self._sess.run
        for _ in range(max(1, warmup)):
            self._run(self._outs, self._feed)

    def score(self, x: np.ndarray) -> float:
        """Anomaly score of one feature vector (higher is more anomalous)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size != self.n_features or x.ndim > 2:
            raise ModelError(f"model {self.name} {self.version} expects {self.n_features} "
                             f"features, got {x.size} (shape {x.shape})")
        self._row[:] = x if x.ndim == 1 else x.reshape(-1)
        if self.check_finite and not math.isfinite(float(_dot(self._row, self._row))):
            if not np.isfinite(self._row).all():  # (x·x overflows for huge finite values)
                raise ModelError(self._bad_features())
        return float(self._run(self._outs, self._feed)[0].flat[0])

    def score_batch(self, X: np.ndarray) -> np.ndarray:
        """Scores of many rows at once (evaluation and replay; not the fast path)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(f"model {self.name} {self.version} expects {self.n_features} "
                             f"features per row, got shape {X.shape}")
        feed = {next(iter(self._feed)): X}
        return np.asarray(self._run(self._outs, feed)[0], np.float64).reshape(len(X), -1)[:, 0]

    def _bad_features(self) -> str:
        bad = np.flatnonzero(~np.isfinite(self._row))
        names = [self.feature_names[i] if i < len(self.feature_names) else f"#{i}" for i in bad]
        return f"non-finite feature value(s): {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
