"""Soak run: simulator + gateway for a long time, a fault every ten minutes, figures out.

``make soak`` (one hour) or ``python -m benchmarks.soak --minutes N``. Not a ``bench_*``
module, so ``make bench`` does not run it; ``tests/faults/test_soak_short.py`` runs a
20-second version in the suite.

What runs: ``sensorml simulate --serial`` at 3 x 25.6 kHz (binary frames on a pty) and
``sensorml gateway`` reading it with a small signed bundle (a z-score model built here,
no scikit-learn), tripping the simulator over the serial line. If ``sensorml sync``
exists (issue 5), it runs every minute against a local folder store. Every
``--fault-every`` the runner injects a fault through the simulator's stdin, waits for the
trip, clears the fault and resets through ``sensorml reset``.

Measured: rows dropped (recorder stats per lane), frames the source missed, gateway RSS
every 10 s (growth after warm-up; target <= 2 MB), window latency p99 from the /metrics
histogram over the first and the last ten minutes (or halves of a short run), trips
and their sample-to-trip figures. ``--json PATH`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RATE = 25600
SPEC = dict(channels=["ax", "ay", "az"], sample_rate=RATE, window=1024, hop=512)
FAULTS = ("outer_race", "imbalance", "inner_race", "looseness")


# --------------------------------------------------------------------- the model
def make_bundle(out: Path, key: Path | None, *, rate: int = RATE, window: int = 1024,
                hop: int = 512, seconds: float = 6.0, seed: int = 3, version: str = "1",
                name: str = "pump") -> Path:
    """A small signed bundle: mean squared z-score of the edge's own features over a
    healthy simulated run, as a 5-node ONNX graph (no training stack needed).

    Thresholds are set from the healthy scores: warn at 3x their 99.9th percentile,
    alarm 4x, trip 6x; a developed bearing fault scores far above that.
    """
    import onnx
    from onnx import TensorProto, helper

    from firmware_bridge.sim.machine import Machine
    from sensorml.bundle import write_bundle
    from sensorml.features import FeatureExtractor, FeatureSpec

    spec = FeatureSpec.from_dict(dict(SPEC, sample_rate=rate, window=window, hop=hop))
    x = Machine("pump", rate=rate, seed=seed).generate(int(seconds * rate))
    ext = FeatureExtractor(spec)
    X = np.vstack([ext(x[i:i + window]) for i in range(0, len(x) - window + 1, hop)])
    mu = X.mean(axis=0).astype(np.float32)
    sd = np.maximum(X.std(axis=0), 1e-6 * np.maximum(np.abs(mu), 1.0)).astype(np.float32)
    n = X.shape[1]
    g = helper.make_graph(
        [helper.make_node("Sub", ["x", "mu"], ["d"]), helper.make_node("Div", ["d", "sd"], ["z"]),
         helper.make_node("Mul", ["z", "z"], ["z2"]),
         helper.make_node("ReduceMean", ["z2"], ["score"], axes=[1], keepdims=1)],
        "zscore", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor("mu", TensorProto.FLOAT, [n], mu.tolist()),
         helper.make_tensor("sd", TensorProto.FLOAT, [n], sd.tolist())])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    healthy = (((X - mu) / sd) ** 2).mean(axis=1)
    top = float(np.quantile(healthy, 0.999))
    names = list(spec.names())
    manifest = {
        "name": name, "version": version, "feature_spec": spec.to_dict(),
        "feature_names": names, "input_name": "x", "output_name": "score",
        "thresholds": {"warn": 3 * top, "alarm": 4 * top, "trip": 6 * top},
        "threshold_method": "multiples of the healthy 99.9th percentile (soak/fault model)",
        "fingerprint": {}, "metrics": {}, "model_family": "zscore", "n_features": n,
        "training": {"rows": int(len(X)), "fitted_at": "1970-01-01T00:00:00Z",
                     "data_sha256": ""},
    }
    return write_bundle(out, manifest, model.SerializeToString(), key)
