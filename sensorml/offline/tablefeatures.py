"""Table features: turn rows of a slow table (one row per time step) into model features.

One definition for training (``training fit --table``), offline scoring (``sensorml
score --table``) and a gateway fed by table rows: :func:`table_features`. The bundle's
manifest records the :class:`TableSpec` (``kind = "table"``, the columns, the temporal
context, the NaN policy and :data:`FEATURE_CODE_VERSION`) so every side rebuilds exactly
the same features.

Per row ``i``, in this order (names in brackets):

- the chosen columns' values (``<col>``), unless ``include_values`` is false;
- for each lag ``L`` in ``lags``: the value ``L`` rows earlier (``<col>.lag<L>``);
- with ``rolling = k`` (k >= 2): over rows ``i-k+1 .. i`` the mean (``<col>.mean<k>``),
  the population std (``<col>.std<k>``) and the least-squares slope in units per row
  (``<col>.slope<k>``), as chosen by ``rolling_stats``.

Row ``i`` only uses rows ``<= i``. The first :meth:`TableSpec.warmup` rows lack the
history and give NaN features (``valid`` is false there): callers report them as
*warm-up*, never score them. A NaN input propagates to every feature that uses it;
:func:`fill_missing` applies the ``fill`` policy first (forward fill, then the column's
training median recorded in ``fill_values``).

>>> spec = TableSpec(columns=("a",), lags=(1,), rolling=3)
>>> spec.names()
('a', 'a.lag1', 'a.mean3', 'a.std3', 'a.slope3')
>>> X, ok = table_features(np.array([[1.0], [2.0], [4.0], [7.0]]), spec)
>>> ok.tolist()
[False, False, True, True]
>>> X[3].astype(float).round(3).tolist()
[7.0, 4.0, 4.333, 2.055, 2.5]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sensorml.errors import ConfigError

__all__ = ["FEATURE_CODE_VERSION", "KIND", "ROLLING_STATS", "NAN_POLICIES", "TableSpec",
           "table_features", "fill_missing", "TableFeaturizer", "is_table_spec"]

#: bump whenever a formula or the order of table features changes
FEATURE_CODE_VERSION = "table-1"
KIND = "table"
ROLLING_STATS = ("mean", "std", "slope")
NAN_POLICIES = ("reject", "fill")


@dataclass(frozen=True)
class TableSpec:
    """Which columns and which temporal context make the features (validated on creation).

    ``time_column`` is informational (the column the rows were ordered by);
    ``fill_values`` maps a column to the value used after forward fill (the training
    median) when ``nan == "fill"``.
    """

    columns: tuple[str, ...]
    lags: tuple[int, ...] = ()
    rolling: int = 0
    rolling_stats: tuple[str, ...] = ROLLING_STATS
    include_values: bool = True
    nan: str = "reject"
    time_column: str | None = None
    fill_values: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        st = object.__setattr__
        cols = tuple(self.columns) if not isinstance(self.columns, str) else (self.columns,)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"features.columns: need one or more column names, got {self.columns!r}")
        if len(set(cols)) != len(cols):
            raise ConfigError(f"features.columns: duplicate names in {list(cols)}")
        st(self, "columns", cols)
        lags = tuple(self.lags)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in lags):
            raise ConfigError(f"features.lags: {list(lags)} must be whole numbers >= 1")
        st(self, "lags", tuple(sorted(set(lags))))
        if not isinstance(self.rolling, int) or isinstance(self.rolling, bool) or \
                self.rolling < 0 or self.rolling == 1:
            raise ConfigError(f"features.rolling: {self.rolling!r} must be 0 (off) or a window "
                              "of >= 2 rows")
        stats = tuple(self.rolling_stats)
        bad = [s for s in stats if s not in ROLLING_STATS]
        if bad or not stats:
            raise ConfigError(f"features.rolling_stats: {bad or stats!r} not in "
                              f"{', '.join(ROLLING_STATS)}")
        st(self, "rolling_stats", tuple(s for s in ROLLING_STATS if s in stats))
        if self.nan not in NAN_POLICIES:
            raise ConfigError(f"features.nan: {self.nan!r} is not one of {', '.join(NAN_POLICIES)}")
        if not self.include_values and not lags and not self.rolling:
            raise ConfigError("features: include_values is false and there are no lags or "
                              "rolling stats: no features left")
        st(self, "fill_values", {str(k): float(v) for k, v in dict(self.fill_values).items()})

    def warmup(self) -> int:
        """Rows at the start without enough history (their features are NaN)."""
        return max(max(self.lags, default=0), self.rolling - 1 if self.rolling else 0)

    def names(self) -> tuple[str, ...]:
        out: list[str] = []
        for c in self.columns:
            if self.include_values:
                out.append(c)
            out += [f"{c}.lag{L}" for L in self.lags]
            if self.rolling:
                out += [f"{c}.{s}{self.rolling}" for s in self.rolling_stats]
        return tuple(out)

    def to_dict(self) -> dict:
        """JSON-ready, with ``kind``, ``feature_code_version`` and ``names``."""
        return {"kind": KIND, "feature_code_version": FEATURE_CODE_VERSION,
                "columns": list(self.columns), "lags": list(self.lags), "rolling": self.rolling,
                "rolling_stats": list(self.rolling_stats), "include_values": self.include_values,
                "nan": self.nan, "time_column": self.time_column,
                "fill_values": dict(self.fill_values), "names": list(self.names())}

    @classmethod
    def from_dict(cls, d: Any) -> TableSpec:
        """Inverse of :meth:`to_dict`; refuses another kind or feature code version."""
        if not isinstance(d, dict):
            raise ConfigError(f"feature_spec: expected an object, got {type(d).__name__}")
        if d.get("kind") != KIND:
            raise ConfigError(f"feature_spec.kind: {d.get('kind')!r} is not {KIND!r} "
                              "(this bundle was not fitted on a table)")
        ver = str(d.get("feature_code_version"))
        if ver != FEATURE_CODE_VERSION:
            raise ConfigError(f"feature_spec.feature_code_version: {ver!r} but this sensorml "
                              f"computes {FEATURE_CODE_VERSION!r}; retrain or upgrade")
        known = {"columns", "lags", "rolling", "rolling_stats", "include_values", "nan",
                 "time_column", "fill_values"}
        unknown = sorted(set(d) - known - {"kind", "feature_code_version", "names"})
        if unknown:
            raise ConfigError(f"feature_spec: unknown key {unknown[0]!r}")
        if "columns" not in d:
            raise ConfigError("feature_spec.columns: required")
        kw = {k: d[k] for k in known if k in d}
        for k in ("columns", "lags", "rolling_stats"):
            if k in kw:
                kw[k] = tuple(kw[k])
        spec = cls(**kw)
        if "names" in d and list(d["names"]) != list(spec.names()):
            raise ConfigError("feature_spec.names: recorded names differ from what the spec gives")
        return spec


def is_table_spec(d: Any) -> bool:
    """True for a manifest ``feature_spec`` made by :class:`TableSpec`."""
    return isinstance(d, dict) and d.get("kind") == KIND


def fill_missing(values: np.ndarray, spec: TableSpec,
                 medians: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Forward-fill NaNs per column, then use the column's median; returns (filled, count).

    *medians* default to ``spec.fill_values`` (the training medians), else the column's
    own median. A column without any value keeps its NaNs.

    >>> v = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0]])
    >>> out, n = fill_missing(v, TableSpec(columns=("a", "b"), nan="fill"))
    >>> out.tolist(), n
    ([[2.0, 1.0], [2.0, 1.0], [2.0, 3.0]], 3)
    """
    v = np.array(values, dtype=np.float64, copy=True)
    miss = np.isnan(v)
    n = int(miss.sum())
    if not n:
        return v, 0
    rows = np.arange(len(v))[:, None]
    last = np.where(~miss, rows, -1)
    np.maximum.accumulate(last, axis=0, out=last)
    got = last >= 0
    cols = np.broadcast_to(np.arange(v.shape[1]), v.shape)
    v[got] = v[last[got], cols[got]]
    for j, c in enumerate(spec.columns):
        rest = np.isnan(v[:, j])
        if rest.any():
            if medians is not None:
                m = medians[j]
            elif c in spec.fill_values:
                m = spec.fill_values[c]
            else:
                ok = v[~rest, j]
                m = float(np.median(ok)) if ok.size else np.nan
            v[rest, j] = m
    return v, n


def table_features(values: np.ndarray, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """Features of every row: ``(float32[n, len(spec.names())], valid bool[n])``.

    *values* is ``[n, len(spec.columns)]`` in ``spec.columns`` order, rows in time order.
    Computed in float64. ``valid`` is false for the warm-up rows and for rows with a
    non-finite feature (a NaN input inside the row's history).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(spec.columns):
        raise ConfigError(f"table rows: expected [rows, {len(spec.columns)}] for columns "
                          f"{', '.join(spec.columns)}, got shape {v.shape}")
    n, nc = v.shape
    per = len(spec.names()) // nc
    out = np.full((n, nc, per), np.nan)
    j = 0
    if spec.include_values:
        out[:, :, j] = v
        j += 1
    for L in spec.lags:
        if L < n:
            out[L:, :, j] = v[:-L]
        j += 1
    k = spec.rolling
    if k and n >= k:
        # k shifted views summed in a fixed order: each row's numbers depend only on its
        # own k rows (the same on a 10-row history as in a million-row table), O(n) memory.
        m = n - k + 1
        shifts = [v[i:i + m] for i in range(k)]
        mean = shifts[0].copy()
        for w in shifts[1:]:
            mean += w
        mean /= k
        for s in spec.rolling_stats:
            if s == "mean":
                out[k - 1:, :, j] = mean
            elif s == "std":
                acc = np.zeros_like(mean)
                for w in shifts:
                    acc += (w - mean) ** 2
                out[k - 1:, :, j] = np.sqrt(acc / k)
            else:  # least-squares slope per row: sum(x_i * v_i) / sum(x_i^2), x centred
                x = np.arange(k) - (k - 1) / 2.0
                acc = np.zeros_like(mean)
                for xi, w in zip(x, shifts):
                    acc += xi * w
                out[k - 1:, :, j] = acc / float((x * x).sum())
            j += 1
    X = out.reshape(n, nc * per).astype(np.float32)
    valid = np.isfinite(X).all(axis=1)
    valid[:spec.warmup()] = False
    return X, valid


class TableFeaturizer:
    """Row-at-a-time features for a live feed: ``push(row) -> float32[n_features] | None``.

    Keeps the last ``warmup + 1`` rows and calls :func:`table_features` on them, so a
    gateway gets exactly the numbers of the offline path. ``None`` during warm-up or when
    the history holds a NaN (with the ``fill`` policy a NaN takes the previous value).

    >>> f = TableFeaturizer(TableSpec(columns=("a",), rolling=2))
    >>> f.push([1.0]) is None, f.push([3.0]).tolist()
    (True, [3.0, 2.0, 1.0, 2.0])
    """

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._hist = np.full((spec.warmup() + 1, len(spec.columns)), np.nan)
        self._seen = 0
        self._medians = np.array([spec.fill_values.get(c, np.nan) for c in spec.columns])

    def push(self, row: Any) -> np.ndarray | None:
        r = np.asarray(row, dtype=np.float64).reshape(-1)
        if r.size != len(self.spec.columns):
            raise ConfigError(f"table row: expected {len(self.spec.columns)} values, got {r.size}")
        if self.spec.nan == "fill" and np.isnan(r).any():
            prev = self._hist[-1] if self._seen else self._medians
            r = np.where(np.isnan(r), np.where(np.isnan(prev), self._medians, prev), r)
        self._hist = np.roll(self._hist, -1, axis=0)
        self._hist[-1] = r
        self._seen += 1
        if self._seen <= self.spec.warmup():
            return None
        X, ok = table_features(self._hist, self.spec)
        return X[-1] if ok[-1] else None
