"""IsolationForest as ONE ``TreeEnsembleRegressor`` node plus three arithmetic nodes.

StandardScaler + IsolationForest: the scaler is folded into the split thresholds.
Output ``score`` = ``-decision_function(x)`` (higher is more anomalous).

Why folding stays exact: scikit-learn's tree compares ``float32(scaled(x)) <= t`` with
``t`` a float64. ``scaled`` is monotone in ``x``, so the set of float32 ``x`` that go
left is ``x <= T`` for one float32 ``T``; :func:`_fold_thresholds` finds that ``T`` with
scikit-learn's own arithmetic, stepping ``nextafter`` until the boundary is exact.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError
from training.onnx.common import INPUT_NAME, OPSET, OUTPUT_NAME, ParityError, build_model

__all__ = ["iforest_reference", "iforest_to_onnx", "skl2onnx_iforest"]


def _fold_thresholds(scaler: StandardScaler | None, feats: np.ndarray, thr: np.ndarray,
                     n_features: int) -> np.ndarray:
    """float32 T per split so that ``x <= T`` ⇔ ``float32(scaler(x)) <= thr`` for float32 x."""
    if scaler is None:
        return _down32(thr)

    def scaled(t: np.ndarray) -> np.ndarray:
        m = np.zeros((len(t), n_features), np.float32)
        m[np.arange(len(t)), feats] = t
        return scaler.transform(m)[np.arange(len(t)), feats].astype(np.float32)

    mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(n_features)
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n_features)
    guess = _key(np.clip(mean[feats] + scale[feats] * thr, -3e38, 3e38).astype(np.float32))
    lo, hi = guess - 1, guess + 1
    for j in range(40):  # widen the bracket: g(lo) <= thr < g(hi)
        bad_lo = ~(scaled(_val(lo)) <= thr)
        bad_hi = scaled(_val(hi)) <= thr
        if not (bad_lo.any() or bad_hi.any()):
            break
        lo[bad_lo] -= 1 << j
        hi[bad_hi] += 1 << j
    else:
        raise ParityError("could not fold the scaler into the tree thresholds exactly")
    while True:  # bisect on the ordered float32 bit patterns
        open_ = hi - lo > 1
        if not open_.any():
            return _val(lo)
        mid = (lo + hi) // 2
        left = scaled(_val(mid)) <= thr
        lo = np.where(open_ & left, mid, lo)
        hi = np.where(open_ & ~left, mid, hi)


def _key(f: np.ndarray) -> np.ndarray:
    """float32 → int64 keys in the same order as the floats (adjacent floats differ by 1)."""
    b = f.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def _val(k: np.ndarray) -> np.ndarray:
    k = np.clip(k, -0x7F7FFFFF, 0x7F7FFFFF)  # stay within the finite float32 range
    b = np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32)
    return b.view(np.float32)


def _down32(v: np.ndarray) -> np.ndarray:
    """Largest float32 <= each float64 value: keeps ``x32 <= v`` exact."""
    f = v.astype(np.float32)
    above = f.astype(np.float64) > v
    f[above] = np.nextafter(f[above], np.float32(-np.inf))
    return f


def iforest_to_onnx(forest: IsolationForest, scaler: StandardScaler | None = None, *,
                    fold_scaler: bool = True) -> onnx.ModelProto:
    """One TreeEnsembleRegressor node computing ``-forest.decision_function(scaler(x))``.

    Leaf weight = (depth + c(n_leaf) - 1) / (n_trees * c(max_samples)), summed over
    trees to S; the score is ``2**-S + offset_``. With ``fold_scaler=False`` a Sub/Div
    pair standardises x first and thresholds are rounded down to float32 instead.

    A forest with a ``rotation_ = (centre, matrix)`` attribute (the ``whiten`` option of
    :mod:`training.models`) was fitted on ``(x - centre) @ matrix``: the graph computes
    that in float64 (Cast → Sub → MatMul → Cast; the scaler is inside the matrix) so
    the float32 values the trees compare are the ones scikit-learn compares.
    """
    rotation = getattr(forest, "rotation_", None)
    n_features = int(forest.n_features_in_) if rotation is None else int(rotation[1].shape[0])
    denom = len(forest.estimators_) * float(_average_path_length([forest._max_samples])[0])
    if denom == 0:
        raise ModelError("IsolationForest fitted on a single sample: nothing to export")
    a: dict[str, list] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "target_treeids", "target_nodeids",
        "target_ids", "target_weights")}
    split_pos, split_feat, split_thr = [], [], []
    for ti, (est, feats) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        tree = est.tree_
        depth = tree.compute_node_depths().astype(np.float64)
        avg = _average_path_length(tree.n_node_samples)
        feats = np.asarray(feats)
        for node in range(tree.node_count):
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            a["nodes_treeids"].append(ti)
            a["nodes_nodeids"].append(node)
            if left == -1:
                a["nodes_featureids"].append(0)
                a["nodes_modes"].append("LEAF")
                a["nodes_values"].append(0.0)
                a["nodes_truenodeids"].append(0)
                a["nodes_falsenodeids"].append(0)
                a["target_treeids"].append(ti)
                a["target_nodeids"].append(node)
                a["target_ids"].append(0)
                a["target_weights"].append((depth[node] + avg[node] - 1.0) / denom)
            else:
                f = int(feats[tree.feature[node]])
                split_pos.append(len(a["nodes_values"]))
                split_feat.append(f)
                split_thr.append(float(tree.threshold[node]))
                a["nodes_featureids"].append(f)
                a["nodes_modes"].append("BRANCH_LEQ")
                a["nodes_values"].append(0.0)
                a["nodes_truenodeids"].append(left)
                a["nodes_falsenodeids"].append(right)
    thr = np.asarray(split_thr, np.float64)
    feat = np.asarray(split_feat, np.int64)
    if rotation is not None:
        folded = _down32(thr)
    else:
        folded = _fold_thresholds(scaler if fold_scaler else None, feat, thr, n_features)
    values = np.zeros(len(a["nodes_values"]), np.float32)
    values[np.asarray(split_pos, np.int64)] = folded
    nodes, inits = [], []
    src = INPUT_NAME
    if rotation is not None:
        inits = [numpy_helper.from_array(np.asarray(rotation[0], np.float64), "centre64"),
                 numpy_helper.from_array(np.asarray(rotation[1], np.float64), "rotation64")]
        nodes = [helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE),
                 helper.make_node("Sub", ["x64", "centre64"], ["d64"]),
                 helper.make_node("MatMul", ["d64", "rotation64"], ["r64"]),
                 helper.make_node("Cast", ["r64"], ["rotated"], to=TensorProto.FLOAT)]
        src = "rotated"
    elif scaler is not None and not fold_scaler:
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(n_features)
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n_features)
        inits += [numpy_helper.from_array(mean.astype(np.float32), "mean"),
                  numpy_helper.from_array(scale.astype(np.float32), "scale")]
        nodes += [helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "scale"], ["scaled"])]
        src = "scaled"
    del a["nodes_values"]
    nodes.append(helper.make_node(
        "TreeEnsembleRegressor", [src], ["path_sum"], domain="ai.onnx.ml", n_targets=1,
        aggregate_function="SUM", post_transform="NONE",
        nodes_values=values.tolist(), **a))
    inits += [numpy_helper.from_array(np.array(-np.log(2.0), np.float32), "neg_ln2"),
              numpy_helper.from_array(np.array(forest.offset_, np.float32), "offset")]
    nodes += [helper.make_node("Mul", ["path_sum", "neg_ln2"], ["log_s"]),
              helper.make_node("Exp", ["log_s"], ["s"]),
              helper.make_node("Add", ["s", "offset"], [OUTPUT_NAME])]
    return build_model(nodes, inits, n_features, "iforest",
                  "anomaly score = -IsolationForest.decision_function; higher is anomalous")


def iforest_reference(model: IsolationForest, scaler: StandardScaler | None,
                      X32: np.ndarray) -> np.ndarray:
    """``-decision_function`` of scikit-learn's own (float32) pipeline, which the compact
    graph reproduces exactly (through the rotation when the forest has one)."""
    if getattr(model, "rotation_", None) is not None:
        centre, matrix = model.rotation_
        z = (X32.astype(np.float64) - centre) @ matrix
        return -model.decision_function(z).astype(np.float64)
    z = scaler.transform(X32) if scaler is not None else X32
    return -model.decision_function(z).astype(np.float64)


def skl2onnx_iforest(forest: IsolationForest, scaler: StandardScaler | None) -> onnx.ModelProto:
    """skl2onnx's own export of the pipeline (for comparison; its ``scores`` = decision_function)."""
    from skl2onnx import to_onnx
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(scaler, forest) if scaler is not None else forest
    x = np.zeros((1, forest.n_features_in_), np.float32)
    return to_onnx(pipe, x, target_opset=dict(OPSET))
