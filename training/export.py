"""Compact ONNX graphs for the edge, built node by node with ``onnx.helper``.

- :func:`iforest_to_onnx`: StandardScaler + IsolationForest as ONE ``TreeEnsembleRegressor``
  node plus three arithmetic nodes; the scaler is folded into the split thresholds.
  Output ``score`` = ``-decision_function(x)`` (higher is more anomalous).
- :func:`pca_to_onnx`: StandardScaler + PCA reconstruction error (SPE/Q) or Hotelling
  T², as Sub → Sub → MatMul → Mul → ReduceSum (the scaler folded into the matrix,
  the centre split into a float32 hi/lo pair to keep precision); ``kind="combined"``
  computes both, each divided by its limit, and takes the larger.
- GaussianMixture and the MLP autoencoder live in :mod:`training.export_gmm` and
  :mod:`training.export_ae`; :func:`reference_scores` dispatches to them.

Why folding stays exact: scikit-learn's tree compares ``float32(scaled(x)) <= t`` with
``t`` a float64. ``scaled`` is monotone in ``x``, so the set of float32 ``x`` that go
left is ``x <= T`` for one float32 ``T``; :func:`_fold_thresholds` finds that ``T`` with
scikit-learn's own arithmetic, stepping ``nextafter`` until the boundary is exact.
Each graph takes ``x`` float32 ``[N, n_features]`` and returns ``score`` float32 ``[N, 1]``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.preprocessing import StandardScaler

from sensorml.errors import ModelError

__all__ = [
    "OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ParityError",
    "iforest_to_onnx",
    "pca_to_onnx",
    "pca_statistics",
    "reference_scores",
    "onnx_scores",
    "parity",
    "skl2onnx_iforest",
]

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
    return _model(nodes, inits, n_features, "iforest",
                  "anomaly score = -IsolationForest.decision_function; higher is anomalous")


def pca_to_onnx(pca: PCA, scaler: StandardScaler | None = None, *, kind: str = "spe",
                limits: tuple[float, float] | None = None) -> onnx.ModelProto:
    """Squared reconstruction error (``kind="spe"``, Q), Hotelling T² (``"t2"``) or both.

    With z = scaler(x) and c = z - pca.mean_: SPE = |c (I - WᵀW)|², T² = Σ (c Wᵀ)² / λ.
    Both are ``(x - centre) @ M`` squared and summed, with 1/scale folded into M.
    ``"combined"`` = max(T² / T²_limit, Q / Q_limit) with ``limits=(T²_limit, Q_limit)``
    (default: the estimator's ``t2_limit_``/``q_limit_`` set by :func:`training.models`'s
    PCA fit, the 99th percentiles of each statistic on the fitting rows), folded in as
    1/√limit in each matrix: 1.0 means "as rare as the healthy 1 %" for either statistic.
    """
    n_features = int(pca.n_features_in_)
    w = pca.components_.astype(np.float64)  # k x n
    mean, scale = scaler_arrays(scaler, n_features)
    centre = mean + scale * pca.mean_
    spe = (np.eye(n_features) - w.T @ w) / scale[:, None]
    t2 = (w.T / np.sqrt(pca.explained_variance_)[None, :]) / scale[:, None]
    nodes, inits = centre_nodes(centre)
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))

    def sumsq(mat: np.ndarray, tag: str, out: str) -> None:
        inits.append(numpy_helper.from_array(mat.astype(np.float32), f"proj_{tag}"))
        nodes.extend([helper.make_node("MatMul", ["d", f"proj_{tag}"], [f"r_{tag}"]),
                      helper.make_node("Mul", [f"r_{tag}", f"r_{tag}"], [f"r2_{tag}"]),
                      helper.make_node("ReduceSum", [f"r2_{tag}", "axis1"], [out], keepdims=1)])

    if kind in ("spe", "t2"):
        sumsq(spe if kind == "spe" else t2, "", OUTPUT_NAME)
    elif kind == "combined":
        t2_lim, q_lim = limits if limits is not None else (getattr(pca, "t2_limit_", None),
                                                           getattr(pca, "q_limit_", None))
        if not (t2_lim and q_lim and t2_lim > 0 and q_lim > 0):
            raise ModelError("pca combined: needs positive T² and Q limits (fit with "
                             "training.models or pass limits=(t2_limit, q_limit))")
        sumsq(t2 / np.sqrt(t2_lim), "t2", "t2n")
        sumsq(spe / np.sqrt(q_lim), "q", "qn")
        nodes.append(helper.make_node("Max", ["t2n", "qn"], [OUTPUT_NAME]))
    else:
        raise ValueError(f"kind: {kind!r} is not 'spe', 't2' or 'combined'")
    return _model(nodes, inits, n_features, f"pca_{kind}",
                  f"PCA {kind.upper()} of standardised x; higher is anomalous")


def pca_statistics(pca: PCA, scaler: StandardScaler | None, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hotelling T² and Q (SPE) of float32 rows, in float64 (the parity reference)."""
    z = np.asarray(X, np.float32).astype(np.float64)
    if scaler is not None:
        z = scaler.transform(z)
    c = z - pca.mean_
    w = pca.components_.astype(np.float64)
    t = c @ w.T
    r = c - t @ w
    return ((t / np.sqrt(pca.explained_variance_)) ** 2).sum(axis=1), (r * r).sum(axis=1)


def reference_scores(model, scaler: StandardScaler | None, X: np.ndarray, *,
                     kind: str = "spe") -> np.ndarray:
    """The anomaly score of float32 rows as scikit-learn defines it: the parity reference.

    IsolationForest: ``-decision_function`` of scikit-learn's own (float32) pipeline, which
    the compact graph reproduces exactly. PCA: SPE, T² or combined computed in float64
    from the float32 rows (scikit-learn's float32 scaler loses digits on features whose
    spread is tiny next to their mean; the graph does not). GaussianMixture and the MLP
    autoencoder: see :mod:`training.export_gmm` and :mod:`training.export_ae`.
    """
    X32 = np.asarray(X, np.float32)
    if isinstance(model, IsolationForest) and getattr(model, "rotation_", None) is not None:
        centre, matrix = model.rotation_
        z = (X32.astype(np.float64) - centre) @ matrix
        return -model.decision_function(z).astype(np.float64)
    if isinstance(model, IsolationForest):
        z = scaler.transform(X32) if scaler is not None else X32
        return -model.decision_function(z).astype(np.float64)
    if isinstance(model, PCA):
        t2, q = pca_statistics(model, scaler, X32)
        if kind == "spe":
            return q
        if kind == "t2":
            return t2
        return np.maximum(t2 / model.t2_limit_, q / model.q_limit_)
    from sklearn.mixture import GaussianMixture
    from sklearn.neural_network import MLPRegressor

    if isinstance(model, GaussianMixture):
        from training.export_gmm import gmm_reference

        return gmm_reference(model, scaler, X32)
    if isinstance(model, MLPRegressor):
        from training.export_ae import autoencoder_reference

        return autoencoder_reference(model, scaler, X32)
    raise ModelError(f"no reference scores for {type(model).__name__}")


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


def skl2onnx_iforest(forest: IsolationForest, scaler: StandardScaler | None) -> onnx.ModelProto:
    """skl2onnx's own export of the pipeline (for comparison; its ``scores`` = decision_function)."""
    from skl2onnx import to_onnx
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(scaler, forest) if scaler is not None else forest
    x = np.zeros((1, forest.n_features_in_), np.float32)
    return to_onnx(pipe, x, target_opset=dict(OPSET))
