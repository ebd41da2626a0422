"""Read what the gateways synced back into numpy, and compact it into partitioned Parquet.

``read_ingest(store)`` walks ``ingest/<device>/...`` and ``labels/<device>/...`` of a
cloud store (any :func:`sensorml.sync.stores.open_store` URL, or a ``Store``), checks every
batch's checksum and returns, per table, columns concatenated over all batches and
devices with a ``device`` column added: the device of the prefix the object was written
under (what the store authenticated), never what a header claims; a header that
disagrees is refused. Rows are de-duplicated by (device, id), so no device's object can
replace another's rows; the sync job uploads each row once, and a copy that somehow got
there twice is dropped. Rows are ordered by (device, id): the order the gateway recorded
them in, right even when its wall clock was not (``t`` is kept, but never sorted on).

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
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sensorml.ids import is_device_id
from sensorml.sync.batch import MAX_BATCH_BYTES, BatchError, decode_batch, raw_window
from sensorml.sync.stores import FileStore, ObjectRefused, Store, open_store

__all__ = ["IngestSource", "compact", "labelled_events", "read_ingest", "read_object",
           "to_pandas"]

log = logging.getLogger("training.ingest")

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
                tables: tuple[str, ...] = TABLES,
                skipped: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{table: {column: array or list}}`` of every synced row (see the module doc).

    ``raw_windows`` gets a ``window`` list (one ``dtype[shape]`` array per row) instead
    of the packed ``data``/``data_offsets``. An object that is refused (see
    :func:`read_object`) is skipped with a one-line warning naming it; the reasons are
    appended to *skipped* when a list is given.
    """
    st = _store(store)
    parts: dict[str, list[tuple[str, dict]]] = {t: [] for t in tables}
    refused = 0
    for top in ("ingest/", "labels/"):
        for name in st.list(top):
            dev = name.split("/")[1] if name.count("/") >= 2 else ""
            if devices and dev not in devices:
                continue
            try:
                h, cols = read_object(st, name)
            except (BatchError, ObjectRefused) as e:
                refused += 1
                log.warning("ingest: skipped %s", e)
                if skipped is not None:
                    skipped.append(str(e))
                continue
            if h["table"] in parts:
                parts[h["table"]].append((dev, cols))
    if refused:
        log.warning("ingest: %d object(s) skipped, their rows left out", refused)
    return {t: _concat(p) for t, p in parts.items()}


def read_object(st: Store, name: str) -> tuple[dict, dict[str, Any]]:
    """One synced batch, bound to the device whose prefix holds it.

    The store authenticated the writer by the prefix (each gateway's credentials may
    write only ``ingest/<device>/`` and ``labels/<device>/``), so the prefix says whose
    rows these are; a header claiming another device is refused, as is a table outside
    its place (labels only under ``labels/``), an object over :data:`MAX_BATCH_BYTES`, a
    symbolic link, a corrupt or inflating-too-far batch (:class:`BatchError`)."""
    top, dev = name.split("/")[:2] if name.count("/") >= 2 else (name, "")
    if not is_device_id(dev):
        raise BatchError(f"{name}: {dev!r} under {top}/ is not a device id; refused")
    h, cols = decode_batch(st.get(name, max_bytes=MAX_BATCH_BYTES), name)
    if h.get("device") != dev:
        raise BatchError(f"{name}: its header claims device {h.get('device')!r} but it was "
                         f"written under {top}/{dev}/; refused (rows belong to the prefix's device)")
    if (h["table"] == "labels") != (top == "labels"):
        raise BatchError(f"{name}: a {h['table']} batch does not belong under {top}/; refused")
    if h["table"] == "raw_windows":
        try:
            cols["window"] = [raw_window(cols, i) for i in range(h["rows"])]
        except (TypeError, ValueError) as e:
            raise BatchError(f"{name}: a raw window does not fit its dtype and shape ({e})") from None
        del cols["data"], cols["data_offsets"]
    return h, cols


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
    label_t}``, the latest label of each event (by label id: the order the operator gave
    them, whatever the gateway's clock said), ordered by device and event id."""
    ev, lab = data["events"], data["labels"]
    latest: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(lab["device"], lab.get("event_id", np.zeros(0)).tolist())):
        if key not in latest or lab["id"][i] >= lab["id"][latest[key]]:
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
    """Write the ingest tree as Hive-partitioned Parquet under *out*; rows per table, and
    how many objects were refused (``skipped objects``, each named in a warning)."""
    import pyarrow.parquet as pq

    skipped: list[str] = []
    data = read_ingest(store, devices=devices, skipped=skipped)
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
    counts["skipped objects"] = len(skipped)
    return counts


class IngestSource:
    """The cloud store's ingest tree as a :class:`training.data.DataSource`.

    ``features()`` gives the synced feature vectors of one device (or all) in time order,
    with what the gateway recorded (score, verdict, model version). Feature names come
    from *feature_spec* (a bundle manifest's ``feature_spec`` with ``names``), since
    batches carry values, not names. ``labels()`` gives each ``true_fault`` label as a
    fault from its event to the next ``reset`` of that device (or the end of the data);
    :meth:`healthy_mask` turns the labels into the rows to retrain on.
    """

    def __init__(self, store: Store | str | Path, *, device: str | None = None,
                 feature_spec: dict | None = None) -> None:
        self.store = store
        self.device = device
        self.feature_spec = dict(feature_spec or {})
        self._data: dict | None = None

    @property
    def data(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            self._data = read_ingest(self.store, devices=(self.device,) if self.device else None)
        return self._data

    def features(self, since: float | None = None, until: float | None = None):
        from training.data import FeatureFrame

        sc = self.data["scores"]
        n = len(sc["id"])
        X = sc.get("features", np.zeros((n, 0), np.float32))
        keep = np.asarray(sc.get("has_features", np.ones(n, bool)), bool)
        t = np.asarray(sc.get("t", np.zeros(n)), float)
        if since is not None:
            keep &= t >= since
        if until is not None:
            keep &= t < until
        order = np.flatnonzero(keep)[np.argsort(t[keep], kind="stable")]
        names = self.feature_spec.get("names")
        width = X.shape[1] if X.ndim == 2 else 0
        if names and len(names) != width:
            from sensorml.errors import ConfigError

            raise ConfigError(f"{self._where()}: synced feature vectors have {width} values, "
                              f"the feature spec names {len(names)}")
        names = tuple(names) if names else tuple(f"f{i}" for i in range(width))
        Xo = np.ascontiguousarray(X[order], np.float32)
        return FeatureFrame(Xo, names, t[order], self.feature_spec or {"names": list(names)},
                            self._where(), np.isfinite(Xo).all(axis=1),
                            np.asarray(sc["score"], float)[order],
                            np.asarray(sc["verdict"], int)[order],
                            tuple(sc["model_version"][i] for i in order))

    def labels(self):
        from training.data import FaultRange

        ev = self.data["events"]
        resets = [(d, int(i), float(t)) for d, i, t, k in  # (device, id) order: what happened
                  zip(ev["device"], ev["id"], ev["t"], ev["kind"]) if k == "reset"]
        out = []
        for e in labelled_events(self.data):
            if e["verdict"] != "true_fault":
                continue
            end = next((t for d, i, t in resets if d == e["device"] and i > e["id"]), np.inf)
            out.append(FaultRange(e["t"], end, f"{e['kind']} #{e['id']}"
                                  + (f": {e['note']}" if e["note"] else "")))
        return out

    def healthy_mask(self, frame, *, margin_s: float = 10.0,
                     alarm_verdict: int = 2) -> tuple[np.ndarray, str]:
        """Rows to retrain on, and how they were chosen: every synced window, except those
        inside a labelled true fault, and except windows the gateway judged alarm or worse
        unless an operator labelled a nearby alarm (± ``margin_s``) a false alarm — those
        are exactly the rows a new model should learn to call normal."""
        t = frame.t
        faulty = np.zeros(len(t), bool)
        for fr in self.labels():
            faulty |= (t >= fr.start) & (t < fr.end)
        false_alarm = np.zeros(len(t), bool)
        n_false = 0
        for e in labelled_events(self.data):
            if e["verdict"] == "false_alarm":
                n_false += 1
                false_alarm |= np.abs(t - e["t"]) <= margin_s
        alarmed = (np.zeros(len(t), bool) if frame.verdict is None
                   else frame.verdict >= alarm_verdict)
        mask = ~faulty & (~alarmed | false_alarm)
        how = (f"synced windows of {self.device or 'every device'} without "
               f"{int(faulty.sum())} in labelled faults and {int((alarmed & ~false_alarm).sum())} "
               f"unlabelled alarms ({n_false} false-alarm label(s) kept as healthy)")
        return mask, how

    def _where(self) -> str:
        return f"{self.store}" + (f" (device {self.device})" if self.device else "")
