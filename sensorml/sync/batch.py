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
so an upload repeated after a failure lands on the same name: :func:`batch_name`. Rows
recorded before the gateway's clock was set (a board without a real-time clock boots in
1970) go under the day ``0000/00/00``; their order is their ids, never their ``t``.

Reading is bounded (:func:`decode_batch`): the payload is inflated as a stream and at most
as far as the header declares (itself at most :data:`MAX_BATCH_BYTES`), so a gzip bomb
is refused after a few bytes, not after a gigabyte; every column is checked for its
place in the payload, its dtype and its row count before anything is built from it.

>>> from sensorml.buffer.rows import LabelRow
>>> rows = [LabelRow(id=3, event_id=1, t=0.0, verdict="true_fault", note="", author="",
...                  synced_at=None)]
>>> data, head = encode_batch("gw1", "labels", rows)
>>> head["batch_id"], batch_name(head)
('labels-000000000003-000000000003', 'labels/gw1/0000/00/00/labels-000000000003-000000000003.smlb.gz')
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

__all__ = ["BatchError", "CLOCK_FLOOR", "COLUMNS", "EXT", "FORMAT", "MAX_BATCH_BYTES", "UNSET_DAY",
           "batch_id", "batch_name", "clock_is_set", "decode_batch", "encode_batch", "raw_window",
           "read_header"]

FORMAT, VERSION, EXT = "sensorml-batch", 1, "smlb.gz"
SCHEMA = "0001_initial"
#: what a reader accepts: a stored batch of at most this many bytes, whose payload (as its
#: header declares it, and as far as its stream may inflate) is at most this many too
MAX_BATCH_BYTES = 256 << 20
MAX_HEADER_BYTES = 1 << 20
#: the wall clock counts as set from this time on (2024-01-01T00:00:00Z): a gateway
#: without a real-time clock boots in 1970 until NTP answers
CLOCK_FLOOR = 1704067200.0
#: the day folder of a batch whose first row was recorded before the clock was set
UNSET_DAY = "0000/00/00"

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
#: the columns made from others (features, raw samples), and their dtypes
_DERIVED = {"has_features": "|b1", "features": "<f4", "data_offsets": "<i8", "data": "|u1"}
PREFIX = {"labels": "labels"}  # other tables go under ingest/


class BatchError(StoreError):
    """A batch is malformed or its checksum does not match."""


def batch_id(table: str, first_id: int, last_id: int) -> str:
    """``<table>-<first>-<last>``, zero-padded so names sort by id.

    >>> batch_id("scores", 1, 5000)
    'scores-000000000001-000000005000'
    """
    return f"{table}-{int(first_id):012d}-{int(last_id):012d}"


def clock_is_set(t: float) -> bool:
    """Whether a wall-clock time is plausible (not before :data:`CLOCK_FLOOR`).

    >>> clock_is_set(0.0), clock_is_set(1.764e9)
    (False, True)
    """
    return t >= CLOCK_FLOOR


def batch_name(header: dict) -> str:
    """``ingest/<device>/<yyyy>/<mm>/<dd>/<batch-id>.smlb.gz`` (labels: ``labels/...``),
    the day of the first row in UTC; :data:`UNSET_DAY` (``0000/00/00``) when that row was
    recorded before the wall clock was set (:func:`clock_is_set`): a day nobody can take
    for a real one, where 1970/01/01 would be a lie."""
    t = float(header["t_first"])
    day = f"{_dt.datetime.fromtimestamp(t, _dt.UTC):%Y/%m/%d}" if clock_is_set(t) else UNSET_DAY
    top = PREFIX.get(header["table"], "ingest")
    return f"{top}/{header['device']}/{day}/{header['batch_id']}.{EXT}"


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


class _Inflater:
    """A gzip stream inflated on demand, never more than asked for: what bounds a bomb."""

    def __init__(self, data: bytes, where: str) -> None:
        self.d = zlib.decompressobj(wbits=31)
        self.data, self.pos, self.where = memoryview(data), 0, where

    def read(self, n: int) -> bytes:
        """Up to *n* more inflated bytes (fewer only at the end of the stream)."""
        out, got = [], 0
        try:
            while got < n and not self.d.eof:
                chunk = self.data[self.pos:self.pos + (1 << 20)]
                b = self.d.decompress(chunk, n - got)
                self.pos += len(chunk) - len(self.d.unconsumed_tail)
                if not b and not chunk:
                    raise BatchError(f"{self.where}: not a complete gzip stream (truncated)")
                out.append(b)
                got += len(b)
        except zlib.error as e:
            raise BatchError(f"{self.where}: not a complete gzip stream ({e})") from None
        return b"".join(out)

    def finish(self, declared: int) -> None:
        """The stream must end here: no more inflated bytes, nothing after it."""
        if self.read(1):
            raise BatchError(f"{self.where}: inflates past the {declared} payload bytes its "
                             "header declares; refused")
        if len(self.d.unused_data) or self.pos < len(self.data):
            raise BatchError(f"{self.where}: bytes after the end of the batch's gzip stream")


def _read_head(inf: _Inflater, where: str) -> tuple[dict, bytes]:
    """The header (inflating at most MAX_HEADER_BYTES to find it) and the payload bytes
    inflated with it."""
    raw = b""
    while b"\n" not in raw:
        more = inf.read(min(64 << 10, MAX_HEADER_BYTES - len(raw))) \
            if len(raw) < MAX_HEADER_BYTES else b""
        if not more:
            raise BatchError(f"{where}: not a {FORMAT} file (no header line in its first "
                             f"{len(raw)} bytes)")
        raw += more
    h, start = _header(raw, where)
    return h, raw[start:]


def read_header(data: bytes, where: str = "batch") -> dict:
    """The header of a batch (inflates only its start)."""
    return _read_head(_Inflater(data, where), where)[0]


def _header(raw: bytes, where: str) -> tuple[dict, int]:
    nl = raw.find(b"\n")
    try:
        h = json.loads(raw[:nl]) if nl > 0 else None
    except (ValueError, RecursionError):
        h = None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise BatchError(f"{where}: not a {FORMAT} file")
    if h.get("version") != VERSION:
        raise BatchError(f"{where}: batch format version {h.get('version')} is not "
                         f"{VERSION}; upgrade sensorml to read it")
    return h, nl + 1


def _count(v: Any, what: str, where: str, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BatchError(f"{where}: {what} is {v!r}, not a count")
    if hi is not None and v > hi:
        raise BatchError(f"{where}: {what} is {v}, over the {hi}-byte limit; refused")
    return v


def decode_batch(data: bytes, where: str = "batch", *,
                 max_bytes: int = MAX_BATCH_BYTES) -> tuple[dict, dict[str, Any]]:
    """``(header, columns)`` of a batch; checks the payload's sha256 and every column's
    place, type and length. Inflation is streamed: a payload declared over *max_bytes*,
    or a stream inflating past what its header declares, is refused before it is in memory.

    Array columns come back as numpy arrays (read-only views of the payload), JSON
    columns as lists.
    """
    inf = _Inflater(data, where)
    h, payload = _read_head(inf, where)
    n = _count(h.get("payload_bytes"), "payload_bytes", where, max_bytes)
    if len(payload) > n:
        raise BatchError(f"{where}: inflates past the {n} payload bytes its header declares; "
                         "refused")
    payload += inf.read(n - len(payload))
    inf.finish(n)
    if len(payload) != n or hashlib.sha256(payload).hexdigest() != h.get("payload_sha256"):
        raise BatchError(f"{where}: payload checksum mismatch (corrupt or truncated batch)")
    table = h.get("table")
    if table not in COLUMNS:
        raise BatchError(f"{where}: table {table!r} is not one of {', '.join(COLUMNS)}")
    specs = h.get("columns")
    if not isinstance(specs, list):
        raise BatchError(f"{where}: header has no list of columns")
    view = memoryview(payload)
    cols: dict[str, Any] = {}
    for i, c in enumerate(specs):
        name = c.get("name") if isinstance(c, dict) else None
        try:
            cols[str(name)] = _column(c, view, COLUMNS[table].get(name) or _DERIVED.get(name),
                                      2 if name == "features" else 1)
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise BatchError(f"{where}: column {i} ({name!r}) is malformed ({e})") from None
    _check_rows(h, cols, where)
    return h, cols


def _column(c: dict, payload: memoryview, expect: str | None, ndim: int) -> Any:
    off, nb = c["offset"], c["nbytes"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (off, nb)) \
            or off + nb > len(payload):
        raise ValueError(f"bytes {off!r}+{nb!r} are not inside the {len(payload)}-byte payload")
    b = payload[off:off + nb]
    if c["kind"] == "json":
        if expect not in (None, "json"):
            raise ValueError(f"expected a {expect} array, got JSON")
        v = json.loads(bytes(b))
        if not isinstance(v, list):
            raise ValueError("a JSON column is a list")
        return v
    if c["kind"] != "array" or not isinstance(c["dtype"], str):
        raise ValueError(f"kind {c['kind']!r} is not array or json")
    dt = np.dtype(c["dtype"])
    if dt.kind not in "biuf" or (expect is not None and dt != np.dtype(expect)):
        raise ValueError(f"dtype {c['dtype']!r} is not " + (expect or "a number type"))
    shape = c["shape"]
    if not isinstance(shape, list) or len(shape) != ndim or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"shape {shape!r} is not a list of {ndim} size(s)")
    if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != nb:
        raise ValueError(f"shape {shape} of {dt.str} is not {nb} bytes")
    buf = _unshuffle(bytes(b), dt.itemsize) if c.get("filter") == "shuffle" else bytes(b)
    return np.frombuffer(buf, dt).reshape(shape)


def _check_rows(h: dict, cols: dict[str, Any], where: str) -> None:
    rows = _count(h.get("rows"), "rows", where)
    if "id" not in cols:
        raise BatchError(f"{where}: no id column")
    for name, v in cols.items():
        if name not in ("data", "data_offsets") and len(v) != rows:
            raise BatchError(f"{where}: column {name} has {len(v)} rows, the header {rows}")
    if "data_offsets" in cols:
        o, d = cols["data_offsets"], cols.get("data", ())
        if len(o) != rows + 1 or o[0] != 0 or (np.diff(o) < 0).any() or o[-1] != len(d):
            raise BatchError(f"{where}: data_offsets do not cut the {len(d)} data bytes into "
                             f"{rows} windows")


def raw_window(cols: dict[str, Any], i: int) -> np.ndarray:
    """Row *i* of a decoded ``raw_windows`` batch as ``dtype[shape]`` samples."""
    o = cols["data_offsets"]
    b = cols["data"][int(o[i]):int(o[i + 1])].tobytes()
    return np.frombuffer(b, np.dtype(cols["dtype"][i])).reshape(cols["shape"][i])
