"""Retraining from the lake: what gateways synced, with operators' labels, becomes the
healthy set of the next model (`training fit --ingest`). Real SQLite buffer, the real
sync job, a real ``file://`` store."""

from __future__ import annotations

import json

import numpy as np

from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.recorder import Recorder
from sensorml.sync.job import SyncJob
from sensorml.sync.stores import open_store
from training.cli import main as training_main
from training.ingest import IngestSource

NAMES = [f"x{i}" for i in range(6)]


def _gateway_history(buf_path):
    """600 windows: normal, a false alarm at t=100, a real fault from t=400 (tripped,
    labelled), reset at t=450, normal again."""
    rng = np.random.default_rng(3)
    rec = Recorder(buf_path, device="gw1", batch=64)
    ev = {}
    for i in range(600):
        t = float(i)
        x = rng.normal(size=6).astype(np.float32)
        verdict = 0
        if 98 <= i <= 102:
            verdict = 2  # the model alarmed on a healthy transient
        if 400 <= i < 450:
            x += 6.0
            verdict = 3
        rec.record_score(t, i, float(x.sum()), verdict, "1", x)
    rec.record_event("alarm", {"reason": "transient"}, t=100.0)
    rec.record_event("trip", {"cause": "model"}, t=401.0)
    rec.record_event("reset", {"by": "op"}, t=450.0)
    assert rec.flush(10)
    rec.close()
    with BufferQueries.open(buf_path) as q:
        for e in q.recent_events(20):
            ev[e.kind] = e.id
        q.add_label(ev["trip"], "true_fault", "outer race", "op")
        q.add_label(ev["alarm"], "false_alarm", "valve change", "op")
    return ev


def test_labels_choose_the_rows_a_new_model_learns_from(tmp_path):
    buf = tmp_path / "buffer.db"
    _gateway_history(buf)
    store_url = f"file://{tmp_path / 'lake'}"
    SyncJob(buf, open_store(store_url), "gw1", state_dir=tmp_path).run_once()

    src = IngestSource(store_url, device="gw1", feature_spec={"names": NAMES})
    frame = src.features()
    assert len(frame) == 600 and frame.names == tuple(NAMES)
    (fault,) = src.labels()
    assert (fault.start, fault.end) == (401.0, 450.0) and "outer race" in fault.label
    mask, how = src.healthy_mask(frame)
    t = frame.t
    assert not mask[(t >= 401) & (t < 450)].any()  # the labelled fault is left out
    assert mask[(t >= 98) & (t <= 102)].all()  # the false alarm is learnt as normal
    assert not mask[t == 400].any()  # an unlabelled alarm window stays out
    assert mask.sum() == 600 - 49 - 1 and "1 false-alarm label" in how


def test_training_fit_from_the_lake_writes_a_bundle(tmp_path):
    buf = tmp_path / "buffer.db"
    _gateway_history(buf)
    store_url = f"file://{tmp_path / 'lake'}"
    SyncJob(buf, open_store(store_url), "gw1", state_dir=tmp_path).run_once()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"names": NAMES}))
    out = tmp_path / "v2"
    assert training_main(["--quiet", "fit", "--ingest", store_url, "--device", "gw1",
                          "--spec", str(spec), "--model", "pca", "--unsigned", "--out", str(out),
                          "--name", "pump", "--version", "2"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["version"] == "2" and man["training"]["rows"] == 550
