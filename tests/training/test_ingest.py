"""Synced batches back into numpy, labels joined to their events, compaction to Parquet."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds

from sensorml.buffer.db import Buffer
from sensorml.cli import main as sensorml_main
from sensorml.sync.job import SyncJob
from sensorml.sync.stores import FileStore
from training.ingest import compact, labelled_events, read_ingest, to_pandas

T0 = 1.764e9


def make_lake(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 45)).astype("<f4")
    raw = rng.normal(size=(1024, 3)).astype("<f4")
    store = FileStore(tmp_path / "cloud", fsync=False)
    for dev in ("gw1", "gw2"):
        db = tmp_path / f"{dev}.db"
        with Buffer(db, device=dev) as b:
            b.write(events=[b.event_row("alarm", {"score": 4.0}, T0), b.event_row("trip", {}, T0 + 1)],
                    scores=[(T0 + i * 0.02, i, float(i), 0, "1", feats[i].tobytes())
                            for i in range(300)],
                    raws=[(T0, "around_alarm", 2, '["ax", "ay", "az"]', 25600.0, "<f4",
                           "[1024, 3]", raw.tobytes())], enforce=False)
        SyncJob(db, store, dev, batch_rows=128).run_once()
    return store, feats, raw


def test_labels_round_trip_from_the_cli_to_training(tmp_path):
    store, feats, raw = make_lake(tmp_path)
    cfg = tmp_path / "gw1.toml"
    cfg.write_text(f'device_id = "gw1"\nstate_dir = "{tmp_path}"\n[source]\nurl = "sim://pump"\n'
                   f'[buffer]\npath = "{tmp_path / "gw1.db"}"\n[sync]\nstore = "{store.url}"\n')
    assert sensorml_main(["label", "--config", str(cfg), "--event", "2", "--verdict",
                          "true_fault", "--note", "outer race spalling", "--by", "ana"]) == 0
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg),
                        "--once"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["uploaded"] == {"labels": 1}
    data = read_ingest(store)
    assert len(data["scores"]["id"]) == 600 and data["scores"]["device"][:1] == ["gw1"]
    np.testing.assert_array_equal(data["scores"]["features"][:300], feats)
    np.testing.assert_array_equal(data["raw_windows"]["window"][1], raw)
    (ev,) = labelled_events(data)
    assert (ev["device"], ev["id"], ev["kind"], ev["verdict"], ev["note"], ev["author"]) == \
        ("gw1", 2, "trip", "true_fault", "outer race spalling", "ana")
    try:
        import pandas  # noqa: F401
    except ImportError:
        return
    assert to_pandas(data, "scores").shape == (600, 9 + 45 - 1)


def test_compact_writes_partitioned_parquet_idempotently(tmp_path):
    store, feats, _ = make_lake(tmp_path)
    out = tmp_path / "lake"
    assert compact(store.url, out)["scores"] == 600
    assert compact(store.url, out)["scores"] == 600  # again: same files, no doubles
    t = ds.dataset(out / "scores", partitioning="hive").to_table()
    assert t.num_rows == 600 and set(t.column("device").to_pylist()) == {"gw1", "gw2"}
    assert sorted({p.parent.name for p in (out / "scores").rglob("*.parquet")}) == ["date=2025-11-24"]
    f = t.filter(ds.field("device") == "gw2").sort_by("id").column("features").to_pylist()
    np.testing.assert_allclose(np.array(f, np.float32), feats)
    r = ds.dataset(out / "raw_windows", partitioning="hive").to_table().to_pylist()[0]
    assert json.loads(r["shape"]) == [1024, 3] and len(r["data"]) == 1024 * 3 * 4
