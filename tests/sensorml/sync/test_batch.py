"""Batch files: what sync writes and training reads back."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.sync.batch import (
    CLOCK_FLOOR,
    MAX_BATCH_BYTES,
    BatchError,
    batch_name,
    clock_is_set,
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
    with BufferQueries.open(tmp_path / "b.db") as q:
        q.add_label(1, "true_fault", "outer race, confirmed", "ana")
        yield q, feats, raw


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



def _rewrite(data: bytes, **header) -> bytes:
    """The batch with header fields replaced (the payload and its checksum unchanged)."""
    raw = gzip.decompress(data)
    nl = raw.index(b"\n")
    h = {**json.loads(raw[:nl]), **header}
    return gzip.compress(json.dumps(h).encode() + raw[nl:])


def test_a_stream_inflating_past_its_header_is_refused_as_it_inflates(buf):
    """A bomb stops being inflated one byte past what its header declares (the memory
    bound itself is measured in tests/faults/test_hostile_store.py)."""
    data, head = encode_batch("gw1", "scores", buf[0].unsynced("scores"))
    raw = gzip.decompress(data)
    nl = raw.index(b"\n")
    bomb = gzip.compress(raw[:nl + 1] + bytes(10 << 20), compresslevel=1)
    with pytest.raises(BatchError, match=rf"^x: inflates past the {head['payload_bytes']} payload "
                                         "bytes its header declares; refused$"):
        decode_batch(bomb, "x")
    big = gzip.compress(raw[:nl].replace(f'"payload_bytes":{head["payload_bytes"]}'.encode(),
                                         f'"payload_bytes":{3 << 30}'.encode()) + b"\n")
    with pytest.raises(BatchError, match=rf"^x: payload_bytes is {3 << 30}, over the "
                                         rf"{MAX_BATCH_BYTES}-byte limit; refused$"):
        decode_batch(big, "x")
    with pytest.raises(BatchError, match=r"^x: not a sensorml-batch file \(no header line in its "
                                         r"first 1048576 bytes\)$"):
        decode_batch(gzip.compress(bytes(3 << 20), compresslevel=1), "x")
    with pytest.raises(BatchError, match="bytes after the end of the batch's gzip stream"):
        decode_batch(data + gzip.compress(b"more"), "x")


@pytest.mark.parametrize("change, msg", [
    (lambda cols: cols[0].update(dtype="|O"), r"column 0 \('id'\) is malformed \(dtype '\|O'"),
    (lambda cols: cols[0].update(dtype="<f8"), r"column 0 \('id'\) is malformed \(dtype '<f8' "
                                               "is not <i8"),
    (lambda cols: cols[1].update(shape=[31]), r"column 1 \('t'\) is malformed \(shape \[31\] of "
                                              "<f8 is not 240 bytes"),
    (lambda cols: cols[1].update(offset=10**9), r"column 1 \('t'\) is malformed \(bytes "
                                                "1000000000"),
    (lambda cols: cols[2].update(kind="pickle"), r"column 2 \('window_seq'\) is malformed"),
    (lambda cols: cols[-1].update(shape=[30]), r"column \d+ \('features'\) is malformed \(shape "
                                               r"\[30\] is not a list of 2 size"),
])
def test_malformed_columns_are_refused_naming_the_column(buf, change, msg):
    data, head = encode_batch("gw1", "scores", buf[0].unsynced("scores"))
    cols = [dict(c) for c in head["columns"]]
    change(cols)
    with pytest.raises(BatchError, match=msg):
        decode_batch(_rewrite(data, columns=cols), "x")


def test_a_row_count_the_columns_do_not_have_is_refused(buf):
    data, _ = encode_batch("gw1", "events", buf[0].unsynced("events"))
    with pytest.raises(BatchError, match=r"^x: column id has 1 rows, the header 2$"):
        decode_batch(_rewrite(data, rows=2), "x")


def test_rows_recorded_before_the_clock_was_set_go_under_day_0000(buf):
    """A board without a real-time clock boots in 1970; its first batches are not filed
    under 1970/01/01 but under a day nobody takes for a real one."""
    rows = [r._replace(t=37.5) for r in buf[0].unsynced("events")]  # 37 s after boot, before NTP
    assert batch_name(encode_batch("gw1", "events", rows)[1]) == \
        "ingest/gw1/0000/00/00/events-000000000001-000000000001.smlb.gz"
    rows[0] = rows[0]._replace(t=CLOCK_FLOOR)
    assert batch_name(encode_batch("gw1", "events", rows)[1]) == \
        "ingest/gw1/2024/01/01/events-000000000001-000000000001.smlb.gz"
    assert not clock_is_set(CLOCK_FLOOR - 1) and clock_is_set(CLOCK_FLOOR)
