"""Batch files: what sync writes and training reads back."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.sync.batch import (
    BatchError,
    batch_name,
    decode_batch,
    encode_batch,
    raw_window,
    read_header,
)


@pytest.fixture
def buf(tmp_path):
    rng = np.random.default_rng(1)
    with Buffer(tmp_path / "b.db", device="gw1") as b:
        ev = b.event_row("alarm", {"score": 3.5, "model_version": "7", "x": float("nan")}, 1.764e9)
        feats = [rng.normal(size=45).astype("<f4").tobytes() if i % 3 else None for i in range(30)]
        scores = [(1.764e9 + i * 0.02, i, float(i), i % 4, "7", feats[i]) for i in range(30)]
        raw = [rng.normal(size=(1024, 3)).astype("<f4"), rng.normal(size=(512, 2)).astype("<f8")]
        raws = [(1.764e9 + i, "around_alarm" if i == 0 else "sample", 2 if i == 0 else 3,
                 json.dumps(["ax", "ay", "az"][:a.shape[1]]), 25600.0, a.dtype.str,
                 json.dumps(list(a.shape)), a.tobytes()) for i, a in enumerate(raw)]
        b.write(events=[ev], scores=scores, raws=raws)
        b.add_label(1, "true_fault", "outer race, confirmed", "ana")
        yield b, feats, raw


def test_every_table_round_trips_to_numpy(buf):
    b, feats, raw = buf
    h, c = decode_batch(encode_batch("gw1", "scores", b.unsynced("scores", 100))[0])
    assert (h["table"], h["rows"], h["first_id"], h["last_id"]) == ("scores", 30, 1, 30)
    assert c["id"].tolist() == list(range(1, 31)) and c["window_seq"].tolist() == list(range(30))
    assert c["features"].shape == (30, 45) and c["has_features"].tolist() == [bool(f) for f in feats]
    for i, f in enumerate(feats):
        if f:
            assert c["features"][i].tobytes() == f
        else:
            assert np.isnan(c["features"][i]).all()
    _, c = decode_batch(encode_batch("gw1", "raw_windows", b.unsynced("raw_windows", 10))[0])
    assert c["reason"] == ["around_alarm", "sample"] and c["channels"][1] == ["ax", "ay"]
    for i, a in enumerate(raw):
        np.testing.assert_array_equal(raw_window(c, i), a)
    _, c = decode_batch(encode_batch("gw1", "events", b.unsynced("events"))[0])
    assert c["kind"] == ["alarm"] and c["detail"][0]["score"] == 3.5 and np.isnan(c["detail"][0]["x"])
    _, c = decode_batch(encode_batch("gw1", "labels", b.unsynced("labels"))[0])
    assert (c["event_id"].tolist(), c["verdict"], c["author"]) == ([1], ["true_fault"], ["ana"])


def test_same_rows_same_bytes_and_name(buf):
    """What makes a repeated upload harmless: identical object under an identical name."""
    b = buf[0]
    d1, h1 = encode_batch("gw1", "scores", b.unsynced("scores"))
    d2, h2 = encode_batch("gw1", "scores", b.unsynced("scores"))
    assert d1 == d2 and batch_name(h1) == batch_name(h2) == \
        "ingest/gw1/2025/11/24/scores-000000000001-000000000030.smlb.gz"
    assert batch_name(encode_batch("gw1", "labels", b.unsynced("labels"))[1]).startswith("labels/gw1/")
    assert read_header(d1)["payload_sha256"] == h1["payload_sha256"]


def test_corrupt_or_foreign_files_are_refused(buf):
    data, _ = encode_batch("gw1", "scores", buf[0].unsynced("scores"))
    raw = bytearray(gzip.decompress(data))
    raw[-5] ^= 0xFF
    with pytest.raises(BatchError, match="checksum mismatch"):
        decode_batch(gzip.compress(bytes(raw)), "x.smlb.gz")
    with pytest.raises(BatchError, match="not a complete gzip"):
        decode_batch(data[:-20])
    with pytest.raises(BatchError, match="not a sensorml-batch"):
        decode_batch(gzip.compress(b'{"a": 1}\n'))

