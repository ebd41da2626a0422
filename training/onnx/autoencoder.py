"""The MLP autoencoder as a compact ONNX graph: score = mean squared reconstruction error.

The autoencoder is scikit-learn's ``MLPRegressor`` fitted to map standardised rows
z = (x - mean) / scale onto themselves through a narrow middle layer. The graph:
Sub → Sub (centre as a float32 hi/lo pair) → Mul (1/scale) = z, then per layer
MatMul → Add → activation (none after the last), then Sub (output - z) → Mul →
ReduceMean over features. ``score = mean((z - mlp.predict(z))²)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError
from training.onnx.common import OUTPUT_NAME, build_model, centre_nodes, scaler_arrays

__all__ = ["autoencoder_to_onnx", "autoencoder_reference", "ACTIVATIONS"]

#: scikit-learn activation → ONNX operator
ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "logistic": "Sigmoid", "identity": None}


def autoencoder_to_onnx(mlp: MLPRegressor, scaler: StandardScaler | None = None) -> onnx.ModelProto:
    """``mean((z - mlp.predict(z))², axis=1)`` with z = scaler(x)."""
    d = int(mlp.n_features_in_)
    if mlp.n_outputs_ != d:
        raise ModelError(f"autoencoder: {mlp.n_outputs_} outputs for {d} inputs; it must "
                         "reconstruct its input")
    if mlp.activation not in ACTIVATIONS:
        raise ModelError(f"autoencoder: activation {mlp.activation!r} has no ONNX export")
    act = ACTIVATIONS[mlp.activation]
    mean, scale = scaler_arrays(scaler, d)
    nodes, inits = centre_nodes(mean)
    inits.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), "inv_scale"))
    nodes.append(helper.make_node("Mul", ["d", "inv_scale"], ["z"]))
    h = "z"
    last = len(mlp.coefs_) - 1
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"w{i}"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        h = f"a{i}"
        if i < last and act is not None:
            nodes.append(helper.make_node(act, [h], [f"h{i}"]))
            h = f"h{i}"
    nodes += [helper.make_node("Sub", [h, "z"], ["err"]),
              helper.make_node("Mul", ["err", "err"], ["err2"]),
              helper.make_node("ReduceMean", ["err2"], [OUTPUT_NAME], axes=[1], keepdims=1)]
    sizes = "-".join(str(w.shape[1]) for w in mlp.coefs_[:-1])
    return build_model(nodes, inits, d, "autoencoder",
                       f"MLP autoencoder ({d}-{sizes}-{d}, {mlp.activation}) mean squared "
                       "reconstruction error of standardised x; higher is anomalous")


def autoencoder_reference(mlp: MLPRegressor, scaler: StandardScaler | None,
                          X: np.ndarray) -> np.ndarray:
    """scikit-learn's reconstruction error of the float32 rows standardised in float64."""
    z = np.asarray(X, np.float32).astype(np.float64)
    if scaler is not None:
        z = scaler.transform(z)
    r = z - mlp.predict(z)
    return (r * r).mean(axis=1)
