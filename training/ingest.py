"""Read what the gateways synced back into numpy, and compact it into partitioned Parquet.

``read_ingest(store)`` walks ``ingest/<device>/...`` and ``labels/<device>/...`` of a
cloud store (any :func:`sensorml.store.open_store` URL, or a ``Store``), checks every
batch's checksum and returns, per table, columns concatenated over all batches and
devices with a ``device`` column added. Rows are de-duplicated by (device, id): the
sync job uploads each row once, and a copy that somehow got there twice is dropped.

``labelled_events(data)`` joins operators' labels to their events (the latest label
wins). ``to_pandas(data, table)`` gives a DataFrame when pandas is installed.

``compact(store, out)`` (``training compact --store URL --out DIR``) writes
``<out>/<table>/device=<id>/date=<yyyy-mm-dd>/<table>-0.parquet`` (Hive partitions that
DuckDB, Spark or Athena read directly): ``scores.features`` as a fixed-size list of
float32, ``raw_windows.data`` as binary with its ``dtype``/``shape``/``channels``.
Re-running it rewrites the partitions it touches, so it is idempotent.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from sensorml.batch import decode_batch, raw_window
from sensorml.store import FileStore, Store, open_store

__all__ = ["compact", "labelled_events", "read_ingest", "to_pandas"]

TABLES = ("events", "labels", "scores", "raw_windows")


def _store(store: Store | str | Path) -> Store:
    if isinstance(store, Store):
        return store
    s = str(store)
    if s.startswith("file://") or "://" not in s:  # reading: never create the folder
        from urllib.parse import unquote, urlsplit

        return FileStore(unquote(urlsplit(s).path) if "://" in s else s, create=False)
    return open_store(s)


def read_ingest(store: Store | str | Path, *, devices: tuple[str, ...] | None = None,
                tables: tuple[str, ...] = TABLES) -> dict[str, dict[str, Any]]:
    """``{table: {column: array or list}}`` of every synced row (see the module doc).

    ``raw_windows`` gets a ``window`` list (one ``dtype[shape]`` array per row) instead
    of the packed ``data``/``data_offsets``.
    """
    st = _store(store)
    parts: dict[str, list[tuple[str, dict]]] = {t: [] for t in tables}
    for top in ("ingest/", "labels/"):
        for name in st.list(top):
            dev = name.split("/")[1]
            if devices and dev not in devices:
                continue
            h, cols = decode_batch(st.get(name), name)
            if h["table"] in parts:
                if h["table"] == "raw_windows":
                    cols["window"] = [raw_window(cols, i) for i in range(h["rows"])]
                    del cols["data"], cols["data_offsets"]
                parts[h["table"]].append((h["device"], cols))
    return {t: _concat(p) for t, p in parts.items()}


def _concat(parts: list[tuple[str, dict]]) -> dict[str, Any]:
    if not parts:
        return {"device": [], "id": np.zeros(0, np.int64)}
    names = list(parts[0][1])
    out: dict[str, Any] = {"device": [d for d, c in parts for _ in range(len(c["id"]))]}
    for n in names:
        vals = [c[n] for _, c in parts]
        if isinstance(vals[0], np.ndarray):
            if vals[0].ndim == 2:  # features: widths may differ between model versions
                w = max(v.shape[1] for v in vals)
                vals = [np.pad(v.astype(np.float32), ((0, 0), (0, w - v.shape[1])),
                               constant_values=np.nan) for v in vals]
            out[n] = np.concatenate(vals)
        else:
            out[n] = [x for v in vals for x in v]
    seen: set = set()
    keep = []
    for i, key in enumerate(zip(out["device"], out["id"].tolist())):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    order = sorted(keep, key=lambda i: (out["device"][i], int(out["id"][i])))
    idx = np.array(order, dtype=np.int64)
    return {k: v[idx] if isinstance(v, np.ndarray) else [v[i] for i in order]
            for k, v in out.items()}


def labelled_events(data: dict[str, dict[str, Any]]) -> list[dict]:
    """Events that have a label: ``{device, id, t, kind, detail, verdict, note, author,
    label_t}``, the latest label of each event, ordered by device and event id."""
    ev, lab = data["events"], data["labels"]
    latest: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(lab["device"], lab.get("event_id", np.zeros(0)).tolist())):
        if key not in latest or lab["t"][i] >= lab["t"][latest[key]]:
            latest[key] = i
    out = []
    for i, key in enumerate(zip(ev["device"], ev["id"].tolist())):
        j = latest.get(key)
        if j is None:
            continue
        out.append({"device": key[0], "id": key[1], "t": float(ev["t"][i]), "kind": ev["kind"][i],
                    "detail": ev["detail"][i], "verdict": lab["verdict"][j],
                    "note": lab["note"][j], "author": lab["author"][j],
                    "label_t": float(lab["t"][j])})
    return out


def to_pandas(data: dict[str, dict[str, Any]], table: str):
    """The table as a pandas DataFrame (features: one column per feature, ``f0``...)."""
    try:
        import pandas as pd
    except ImportError:
        from sensorml.errors import SensormlError

        raise SensormlError("to_pandas needs pandas (pip install pandas); the numpy "
                            "columns of read_ingest() need nothing more") from None
    cols = dict(data[table])
    feats = cols.pop("features", None)
    df = pd.DataFrame({k: (list(v) if isinstance(v, np.ndarray) and v.ndim > 1 else v)
                       for k, v in cols.items()})
    if feats is not None and feats.size:
        df = pd.concat([df, pd.DataFrame(feats, columns=[f"f{i}" for i in range(feats.shape[1])])],
                       axis=1)
    return df


def _arrow_table(table: str, cols: dict[str, Any]):
    import pyarrow as pa

    out: dict[str, Any] = {}
    for k, v in cols.items():
        if k == "features":
            w = v.shape[1]
            out[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), w)
        elif k == "window":
            out["data"] = pa.array([a.tobytes() for a in v], pa.binary())
        elif isinstance(v, np.ndarray):
            out[k] = pa.array(v)
        elif k in ("detail", "channels", "shape"):
            out[k] = pa.array([json.dumps(x) for x in v], pa.string())
        else:
            out[k] = pa.array(v)
    out["date"] = pa.array([_dt.datetime.fromtimestamp(float(t), _dt.UTC).strftime("%Y-%m-%d")
                            for t in cols["t"]], pa.string())
    return pa.table(out)


def compact(store: Store | str | Path, out: str | Path, *,
            devices: tuple[str, ...] | None = None) -> dict[str, int]:
    """Write the ingest tree as Hive-partitioned Parquet under *out*; rows per table."""
    import pyarrow.parquet as pq

    data = read_ingest(store, devices=devices)
    counts = {}
    for table, cols in data.items():
        n = len(cols["id"])
        counts[table] = n
        if not n:
            continue
        pq.write_to_dataset(_arrow_table(table, cols), str(Path(out) / table),
                            partition_cols=["device", "date"],
                            existing_data_behavior="delete_matching",
                            basename_template=f"{table}-{{i}}.parquet")
    return counts
