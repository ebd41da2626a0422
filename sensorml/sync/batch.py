"""Upload batches: compressed, self-describing, checksummed; numpy and the stdlib only.

A batch is one gzip stream: a JSON header line, then the payload — the columns one
after the other. The header says everything a reader needs (no pickle, no schema
elsewhere)::

    {"format": "sensorml-batch", "version": 1, "schema": "0001_initial",
     "device": "gw1", "table": "scores", "batch_id": "scores-000000000001-000000005000",
     "rows": 5000, "first_id": 1, "last_id": 5000, "t_min": ..., "t_max": ...,
     "payload_bytes": N, "payload_sha256": "...",
     "columns": [{"name": "id", "kind": "array", "dtype": "<i8", "shape": [5000],
                  "filter": "shuffle", "offset": 0, "nbytes": 40000}, ...]}

``kind`` is ``array`` (little-endian numpy bytes; ``filter: shuffle`` stores byte 0 of
every value, then byte 1, ... which lets gzip find the repeated exponent bytes of
floats) or ``json`` (a UTF-8 JSON list, for text columns). ``scores.features`` is a
``float32[rows, n]`` array (NaN rows where none was kept, see ``has_features``);
``raw_windows.data`` is all windows' bytes back to back with ``data_offsets``
(``int64[rows + 1]``); :func:`raw_window` gives one window back as an array.

The name is a pure function of (device, table, first id, last id, first row's UTC day)
so an upload repeated after a failure lands on the same name: :func:`batch_name`.

>>> from sensorml.buffer.rows import LabelRow
>>> rows = [LabelRow(id=3, event_id=1, t=0.0, verdict="true_fault", note="", author="",
...                  synced_at=None)]
>>> data, head = encode_batch("gw1", "labels", rows)
>>> head["batch_id"], batch_name(head)
('labels-000000000003-000000000003', 'labels/gw1/1970/01/01/labels-000000000003-000000000003.smlb.gz')
>>> h, cols = decode_batch(data)
>>> cols["verdict"], cols["id"].tolist()
(['true_fault'], [3])
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import zlib
from typing import Any

import numpy as np

from sensorml.buffer.rows import Row
from sensorml.errors import StoreError

__all__ = ["BatchError", "COLUMNS", "EXT", "FORMAT", "batch_id", "batch_name", "decode_batch",
           "encode_batch", "raw_window", "read_header"]

FORMAT, VERSION, EXT = "sensorml-batch", 1, "smlb.gz"
SCHEMA = "0001_initial"

# column -> numpy dtype, or "json" for text/JSON columns (in buffer column order)
COLUMNS: dict[str, dict[str, str]] = {
    "events": {"id": "<i8", "t": "<f8", "kind": "json", "severity": "<i2", "priority": "<i2",
               "device": "json", "model_version": "json", "detail": "json"},
    "labels": {"id": "<i8", "event_id": "<i8", "t": "<f8", "verdict": "json", "note": "json",
               "author": "json"},
    "scores": {"id": "<i8", "t": "<f8", "window_seq": "<i8", "score": "<f8", "verdict": "<i1",
               "model_version": "json"},
    "raw_windows": {"id": "<i8", "t": "<f8", "reason": "json", "priority": "<i1",
                    "channels": "json", "rate": "<f8", "dtype": "json", "shape": "json"},
}
PREFIX = {"labels": "labels"}  # other tables go under ingest/


class BatchError(StoreError):
    """A batch is malformed or its checksum does not match."""


def batch_id(table: str, first_id: int, last_id: int) -> str:
    """``<table>-<first>-<last>``, zero-padded so names sort by id.

    >>> batch_id("scores", 1, 5000)
    'scores-000000000001-000000005000'
    """
    return f"{table}-{int(first_id):012d}-{int(last_id):012d}"


def batch_name(header: dict) -> str:
    """``ingest/<device>/<yyyy>/<mm>/<dd>/<batch-id>.smlb.gz`` (labels: ``labels/...``),
    the day of the first row in UTC."""
    day = _dt.datetime.fromtimestamp(float(header["t_first"]), _dt.UTC)
    top = PREFIX.get(header["table"], "ingest")
    return f"{top}/{header['device']}/{day:%Y/%m/%d}/{header['batch_id']}.{EXT}"


def _shuffle(b: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not b:
        return b
    return np.frombuffer(b, np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(b: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not b:
        return b
    return np.frombuffer(b, np.uint8).reshape(itemsize, -1).T.tobytes()


def _columns(table: str, rows: list[Row]) -> dict[str, Any]:
    by_name = dict(zip(rows[0]._fields, zip(*rows)))  # the rows are tuples: transpose them
    cols: dict[str, Any] = {}
    for name, dt in COLUMNS[table].items():
        vals = by_name[name]
        cols[name] = list(vals) if dt == "json" else np.array(vals, dtype=dt)
    if table == "scores":
        feats = by_name["features"]
        n = max((len(f) // 4 for f in feats if f), default=0)
        x = np.full((len(rows), n), np.nan, np.float32)
        for i, f in enumerate(feats):
            if f:
                x[i, :len(f) // 4] = np.frombuffer(f, "<f4")
        cols["has_features"] = np.array([bool(f) for f in feats], bool)
        cols["features"] = x
    elif table == "raw_windows":
        blobs = [bytes(b) for b in by_name["data"]]
        cols["data_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype("<i8")
        cols["data"] = np.frombuffer(b"".join(blobs), np.uint8)
    return cols


def encode_batch(device: str, table: str, rows: list[Row], *, bid: str | None = None,
                 level: int = 6) -> tuple[bytes, dict]:
    """Encode buffer rows (typed rows of *table*, as
    :meth:`~sensorml.buffer.queries.BufferQueries.unsynced` returns them) into a batch.

    ``bid`` overrides the batch id (a retried batch keeps the name it was first given).
    Returns ``(bytes, header)``.
    """
    if table not in COLUMNS:
        raise BatchError(f"batch: table {table!r} is not one of {', '.join(COLUMNS)}")
    if not rows:
        raise BatchError(f"batch: no rows of {table} to encode")
    ids = [int(r.id) for r in rows]
    cols = _columns(table, rows)
    specs, parts, off = [], [], 0
    for name, v in cols.items():
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and a.dtype.itemsize > 1
                                            and np.little_endian is False):
                a = a.astype(a.dtype.newbyteorder("<"))
            filt = "shuffle" if a.dtype.itemsize > 1 else ""
            b = _shuffle(a.tobytes(), a.dtype.itemsize) if filt else a.tobytes()
            specs.append({"name": name, "kind": "array", "dtype": a.dtype.str,
                          "shape": list(a.shape), "filter": filt, "offset": off, "nbytes": len(b)})
        else:
            b = json.dumps(v, separators=(",", ":"), allow_nan=True).encode()
            specs.append({"name": name, "kind": "json", "offset": off, "nbytes": len(b)})
        parts.append(b)
        off += len(b)
    payload = b"".join(parts)
    ts = [float(r.t) for r in rows]
    header = {"format": FORMAT, "version": VERSION, "schema": SCHEMA, "device": device,
              "table": table, "batch_id": bid or batch_id(table, min(ids), max(ids)),
              "rows": len(rows), "first_id": min(ids), "last_id": max(ids),
              "t_first": ts[0], "t_min": min(ts), "t_max": max(ts),
              "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), "columns": specs}
    head = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    # mtime=0: the same rows always give the same bytes (an overwrite is identical)
    return gzip.compress(head + payload, compresslevel=level, mtime=0), header


def _inflate(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise BatchError(f"{where}: not a complete gzip stream ({e})") from None


def read_header(data: bytes, where: str = "batch") -> dict:
    """The header of a batch (decompresses only its start)."""
    d = zlib.decompressobj(wbits=31)
    try:
        start = d.decompress(data, 1 << 20)
    except zlib.error as e:
        raise BatchError(f"{where}: not gzip ({e})") from None
    return _header(start, where)[0]


def _header(raw: bytes, where: str) -> tuple[dict, int]:
    nl = raw.find(b"\n")
    try:
        h = json.loads(raw[:nl]) if nl > 0 else None
    except ValueError:
        h = None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise BatchError(f"{where}: not a {FORMAT} file")
    if h.get("version") != VERSION:
        raise BatchError(f"{where}: batch format version {h.get('version')} is not "
                         f"{VERSION}; upgrade sensorml to read it")
    return h, nl + 1


def decode_batch(data: bytes, where: str = "batch") -> tuple[dict, dict[str, Any]]:
    """``(header, columns)`` of a batch; checks the payload's sha256.

    Array columns come back as numpy arrays (read-only views of the payload), JSON
    columns as lists.
    """
    raw = _inflate(data, where)
    h, start = _header(raw, where)
    payload = memoryview(raw)[start:]
    if len(payload) != h["payload_bytes"] or \
            hashlib.sha256(payload).hexdigest() != h["payload_sha256"]:
        raise BatchError(f"{where}: payload checksum mismatch (corrupt or truncated batch)")
    cols: dict[str, Any] = {}
    for c in h["columns"]:
        b = payload[c["offset"]:c["offset"] + c["nbytes"]]
        if c["kind"] == "json":
            cols[c["name"]] = json.loads(bytes(b))
            continue
        dt = np.dtype(c["dtype"])
        if dt.hasobject:
            raise BatchError(f"{where}: column {c['name']} has an object dtype")
        buf = _unshuffle(bytes(b), dt.itemsize) if c.get("filter") == "shuffle" else bytes(b)
        cols[c["name"]] = np.frombuffer(buf, dt).reshape(c["shape"])
    return h, cols


def raw_window(cols: dict[str, Any], i: int) -> np.ndarray:
    """Row *i* of a decoded ``raw_windows`` batch as ``dtype[shape]`` samples."""
    o = cols["data_offsets"]
    b = cols["data"][int(o[i]):int(o[i + 1])].tobytes()
    return np.frombuffer(b, np.dtype(cols["dtype"][i])).reshape(cols["shape"][i])
