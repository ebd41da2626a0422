"""Data in: every source of training rows behind one interface, :class:`DataSource`.

- :class:`BufferSource`: a gateway's local buffer file (SQLite, opened read-only): the
  ``scores`` table's feature vectors with their times, model versions and verdicts, and
  the operators' ``labels`` joined to their ``events``.
- :class:`TableSource`: a plant historian export (CSV with any delimiter, or Parquet),
  one row per time step; features are built by :mod:`sensorml.offline.tablefeatures` exactly as
  the edge builds them.

The cloud store's ingest tree (``ingest/<device>/<yyyy>/<mm>/<dd>/<batch>.*``) gets its
source when the sync issue defines the batch format; it will implement the same
protocol.

Healthy and faulty parts are given as rows (``0:400``, ``160:960,1000:``; end exclusive)
or time spans (``2024-01-01T00:00..2024-01-02T00:00``; numbers are seconds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from sensorml.buffer.rows import EventLabel
from sensorml.errors import ConfigError
from sensorml.offline.tablefeatures import TableSpec, fill_missing, table_features
from sensorml.offline.tableio import (
    Table,
    parse_time,
    read_buffer_labels,
    read_buffer_scores,
    read_table,
)

__all__ = ["FeatureFrame", "FaultRange", "DataSource", "BufferSource", "TableSource",
           "parse_row_ranges", "parse_time_ranges", "rows_mask", "ranges_mask", "min_rows",
           "healthy_table"]


@dataclass(frozen=True)
class FeatureFrame:
    """Feature rows in time order. ``valid`` is false for rows that must not be used
    (warm-up of the temporal context, missing values); ``score``/``verdict``/
    ``model_version`` are what a gateway recorded (None for a table)."""

    X: np.ndarray
    names: tuple[str, ...]
    t: np.ndarray
    feature_spec: dict
    source: str
    valid: np.ndarray
    score: np.ndarray | None = None
    verdict: np.ndarray | None = None
    model_version: tuple[str, ...] | None = None
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.X)


@dataclass(frozen=True)
class FaultRange:
    """A labelled fault: times ``start <= t < end`` (``end`` may be ``inf``)."""

    start: float
    end: float
    label: str = "fault"


@runtime_checkable
class DataSource(Protocol):
    """Where training rows come from."""

    def features(self, since: float | None = None, until: float | None = None) -> FeatureFrame:
        """Feature rows with ``since <= t < until`` (None: unbounded)."""
        ...

    def labels(self) -> list[FaultRange]:
        """Known faults (empty when the source carries none)."""
        ...


class BufferSource:
    """A gateway's ``buffer.db``. Feature names come from *feature_spec* (e.g. the
    bundle's or ``cfg.feature_spec().to_dict()``) when given, else ``f0..fN``.

    :meth:`labels`: each event an operator labelled ``true_fault`` is a fault from the
    event's time to the next ``reset`` event (or the end of the data);
    :meth:`label_rows` gives every label with its event, ``false_alarm`` ones included.
    """

    def __init__(self, path: str | os.PathLike, feature_spec: dict | None = None) -> None:
        self.path = os.fspath(path)
        self.feature_spec = dict(feature_spec or {})

    def features(self, since: float | None = None, until: float | None = None) -> FeatureFrame:
        names = self.feature_spec.get("names")
        r = read_buffer_scores(self.path, since, until,
                               n_features=len(names) if names else None)
        n = r.X.shape[1]
        names = tuple(names) if names else tuple(f"f{i}" for i in range(n))
        notes = (f"{r.skipped} score rows without features of width {n} skipped",) \
            if r.skipped else ()
        return FeatureFrame(r.X, names, r.t, self.feature_spec or {"names": list(names)},
                            self.path, np.isfinite(r.X).all(axis=1), r.score, r.verdict,
                            r.model_version, notes)

    def label_rows(self) -> list[EventLabel]:
        return read_buffer_labels(self.path)

    def labels(self) -> list[FaultRange]:
        return [FaultRange(float(r.event_t),
                           float(r.next_reset_t) if r.next_reset_t is not None else np.inf,
                           f"{r.kind} #{r.event_id}" + (f": {r.note}" if r.note else ""))
                for r in self.label_rows() if r.verdict == "true_fault"]


class TableSource:
    """A CSV/Parquet table; :meth:`features` applies *spec* (columns, context, NaNs).

    With ``spec.nan == "fill"`` missing values are forward-filled then set to the column's
    median; :attr:`filled` says how many and the medians go into the returned spec (so the
    edge fills the same way). With ``"reject"`` a missing value is an error naming it.
    """

    def __init__(self, path: str | os.PathLike, *, time_column: str | None = None,
                 columns: list[str] | tuple[str, ...] | None = None, delimiter: str | None = None,
                 lags: tuple[int, ...] = (), rolling: int = 0,
                 rolling_stats: tuple[str, ...] | None = None, include_values: bool = True,
                 nan: str = "reject", labels: list[FaultRange] | None = None) -> None:
        self.table: Table = read_table(path, time_column=time_column, columns=columns,
                                       delimiter=delimiter, numeric_only=True)
        self.path = os.fspath(path)
        kw = {"rolling_stats": tuple(rolling_stats)} if rolling_stats else {}
        spec = TableSpec(columns=self.table.columns, lags=tuple(lags), rolling=rolling,
                         include_values=include_values, nan=nan, time_column=time_column, **kw)
        v = self.table.values
        miss = np.isnan(v)
        self.filled = 0
        if miss.any():
            if nan == "reject":
                j = int(np.flatnonzero(miss.any(axis=0))[0])
                i = int(np.flatnonzero(miss[:, j])[0])
                raise ConfigError(f"{self.table.source}: column '{self.table.columns[j]}' has "
                                  f"{int(miss[:, j].sum())} missing value(s), first at row {i} "
                                  f"({int(miss.sum())} in all); use --nan fill to forward-fill "
                                  "them, or clean the table")
            med = np.nanmedian(np.where(miss, np.nan, v), axis=0)
            empty = [c for c, m in zip(self.table.columns, med) if np.isnan(m)]
            if empty:
                raise ConfigError(f"{self.table.source}: column '{empty[0]}' has no values at all")
            spec = TableSpec(**{**_spec_kw(spec),
                                "fill_values": dict(zip(self.table.columns, med.tolist()))})
            v, self.filled = fill_missing(v, spec)
        self.values = v
        self.spec = spec
        self._labels = list(labels or [])

    def features(self, since: float | None = None, until: float | None = None) -> FeatureFrame:
        X, ok = table_features(self.values, self.spec)
        t = self.table.t
        sel = np.ones(len(t), bool)
        if since is not None:
            sel &= t >= since
        if until is not None:
            sel &= t < until
        notes = (f"{self.filled} missing value(s) filled (forward fill, then column median)",) \
            if self.filled else ()
        return FeatureFrame(X[sel], self.spec.names(), t[sel], self.spec.to_dict(),
                            self.path, ok[sel], notes=notes)

    def labels(self) -> list[FaultRange]:
        return list(self._labels)


def _spec_kw(spec: TableSpec) -> dict:
    return {k: getattr(spec, k) for k in ("columns", "lags", "rolling", "rolling_stats",
                                           "include_values", "nan", "time_column")}


# ------------------------------------------------------------------ ranges
def parse_row_ranges(text: str, n: int, what: str = "--healthy-rows") -> list[tuple[int, int]]:
    """``"0:400,500:"`` → ``[(0, 400), (500, n)]``; Python slice bounds, end exclusive.

    >>> parse_row_ranges("0:400, 500:", 1000), parse_row_ranges("-100:", 1000)
    ([(0, 400), (500, 1000)], [(900, 1000)])
    """
    out = []
    for part in (p.strip() for p in text.split(",")):
        if ":" not in part:
            raise ConfigError(f"{what}: {part!r} is not a row range like 0:400")
        a, b = part.split(":", 1)
        try:
            s = slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not a row range like 0:400") from None
        lo, hi, _ = s.indices(n)
        if hi <= lo:
            raise ConfigError(f"{what}: {part!r} selects no rows of {n}")
        out.append((lo, hi))
    return out


def parse_time_ranges(text: str, what: str = "--healthy-time") -> list[tuple[float, float]]:
    """``"a..b,c..d"`` with numbers (s) or ISO timestamps; an empty side is unbounded.

    >>> parse_time_ranges("10..20,1970-01-01T00:01..")
    [(10.0, 20.0), (60.0, inf)]
    """
    out = []
    for part in (p.strip() for p in text.split(",")):
        if ".." not in part:
            raise ConfigError(f"{what}: {part!r} is not a time span like "
                              "2024-01-01T00:00..2024-01-02T00:00")
        a, b = part.split("..", 1)
        try:
            lo = parse_time(a) if a.strip() else -np.inf
            hi = parse_time(b) if b.strip() else np.inf
        except ValueError:
            raise ConfigError(f"{what}: {part!r}: the bounds must be numbers or ISO "
                              "timestamps") from None
        if hi <= lo:
            raise ConfigError(f"{what}: {part!r} ends before it starts")
        out.append((float(lo), float(hi)))
    return out


def rows_mask(ranges: list[tuple[int, int]], n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    for lo, hi in ranges:
        m[lo:hi] = True
    return m


def ranges_mask(ranges, t: np.ndarray) -> np.ndarray:
    """Rows whose time falls in any ``(start, end)`` (or :class:`FaultRange`)."""
    t = np.asarray(t, np.float64)
    m = np.zeros(len(t), bool)
    for r in ranges:
        lo, hi = (r.start, r.end) if isinstance(r, FaultRange) else r
        m |= (t >= lo) & (t < hi)
    return m


def min_rows(model: str) -> int:
    """Fewest healthy rows the model family accepts (from :mod:`training.fit`)."""
    from training import fit

    per = getattr(fit, "MIN_ROWS_BY_MODEL", None)
    if isinstance(per, dict) and model in per:
        return int(per[model])
    m = getattr(fit, "MIN_ROWS", 50)
    return int(m[model]) if isinstance(m, dict) and model in m else int(m if isinstance(m, int) else 50)


def healthy_table(frame: FeatureFrame, healthy: np.ndarray, model: str, how: str):
    """The valid healthy rows as a ``training.fit.FeatureTable``; too few is an error
    like ``--healthy-rows 0:10 gives 10 rows; iforest needs at least 50``."""
    from training.fit import FeatureTable

    sel = healthy & frame.valid
    need = min_rows(model)
    n_h, n_ok = int(healthy.sum()), int(sel.sum())
    if n_ok < need:
        lost = f" ({n_ok} after {n_h - n_ok} warm-up/missing rows)" if n_ok != n_h else ""
        raise ConfigError(f"{how} gives {n_h} rows{lost}; {model} needs at least {need}")
    return FeatureTable(np.ascontiguousarray(frame.X[sel], np.float32), tuple(frame.names),
                        frame.feature_spec, frame.source)
