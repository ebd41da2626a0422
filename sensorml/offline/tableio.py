"""Reading rows offline: plain tables (CSV, Parquet) and a gateway buffer's score rows.

Edge-safe (numpy and the standard library; Parquet needs pyarrow, imported only when a
``.parquet`` file is read). Used by ``sensorml score`` and by ``training`` alike, so a
table is parsed one way everywhere.

Tables: one row per time step, a header row of column names. Cells that are empty or
``nan``/``NA``/``null`` are missing (NaN); anything else must be a number. The time
column may hold numbers (seconds) or ISO 8601 timestamps (naive ones are UTC). Rows are
numbered from 0 in messages, the same numbering as ``--healthy-rows``.

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "run.csv")
>>> _ = open(p, "w").write("t;a;b\\n2024-01-01T00:00:00;1;2\\n2024-01-01T00:00:01;3;\\n")
>>> tab = read_table(p, time_column="t")
>>> tab.columns, tab.values.tolist(), tab.t.tolist()
(('a', 'b'), [[1.0, 2.0], [3.0, nan]], [1704067200.0, 1704067201.0])
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import EventLabel, ScoreColumns
from sensorml.errors import ConfigError

__all__ = ["Table", "read_table", "select_columns", "parse_time",
           "read_buffer_scores", "read_buffer_labels"]

_MISSING = {"", "nan", "na", "n/a", "null", "none"}


@dataclass(frozen=True)
class Table:
    """A table read from a file: ``values`` float64 [rows, columns] (NaN = missing).

    ``t`` float64 seconds (unix time for timestamps; the row index without a time
    column), ``t_text`` the time cells as written (for output), ``time_kind`` one of
    ``"number"``, ``"timestamp"``, ``"row"``.
    """

    source: str
    columns: tuple[str, ...]
    values: np.ndarray
    t: np.ndarray
    t_text: tuple[str, ...]
    time_column: str | None
    time_kind: str

    def __len__(self) -> int:
        return len(self.values)


def _name(path: str | os.PathLike) -> str:
    return os.path.basename(os.fspath(path))


def parse_time(text: str) -> float:
    """Seconds from a number or an ISO 8601 timestamp (naive = UTC); ValueError otherwise.

    >>> parse_time("12.5"), parse_time("1970-01-01T00:01:00Z"), parse_time("1970-01-01 00:00:02")
    (12.5, 60.0, 2.0)
    """
    s = text.strip()
    try:
        v = float(s)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    d = datetime.fromisoformat(s)  # raises ValueError
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def _sniff(path: Path, delimiter: str | None) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path.name}: cannot read table: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path.name}: not a UTF-8 text table (byte {e.start})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{path.name}: empty table (expected a header row and data rows)")
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t| ").delimiter
        except csv.Error:
            delimiter = ","
    rows = list(csv.reader(lines, delimiter=delimiter, skipinitialspace=True))
    header = [h.strip() for h in rows[0]]
    return header, rows[1:]


def _numbers(name: str, col: str, cells: list[str], offset: int = 0) -> np.ndarray:
    try:  # fast path: numpy parses the whole column (about 10x the loop below)
        out = np.array(cells, dtype=np.float64)
        if np.isfinite(out).all():
            return out
    except ValueError:
        pass
    out = np.empty(len(cells))
    for i, c in enumerate(cells):
        s = c.strip()
        if s.lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(s)
        except ValueError:
            raise ConfigError(f"{name}: column '{col}' row {i + offset}: {s!r:.40} is not a number"
                              ) from None
        if math.isinf(out[i]):
            raise ConfigError(f"{name}: column '{col}' row {i + offset}: {s!r} is infinite")
    return out


def _times(name: str, col: str, cells: list[str]) -> tuple[np.ndarray, str]:
    try:  # fast path: a column of plain numbers
        t = np.array(cells, dtype=np.float64)
        if np.isfinite(t).all():
            return t, "number"
    except ValueError:
        pass
    t = np.empty(len(cells))
    kind = "number"
    for i, c in enumerate(cells):
        try:
            t[i] = parse_time(c)
        except ValueError:
            raise ConfigError(f"{name}: time column '{col}' row {i}: {c.strip()!r:.40} is neither "
                              "a number nor an ISO timestamp") from None
        if i == 0:
            try:
                float(c)
            except ValueError:
                kind = "timestamp"
    return t, kind


def select_columns(name: str, header: list[str] | tuple[str, ...], columns, time_column
                   ) -> tuple[str, ...]:
    """Check the chosen columns exist; default: every column but the time column."""
    have = list(header)
    missing_msg = lambda c: (f"{name}: column '{c}' not found "  # noqa: E731
                             f"(columns: {', '.join(sorted(have))})")
    if time_column is not None and time_column not in have:
        raise ConfigError(missing_msg(time_column) + "; check --time-column")
    dup = sorted({h for h in have if have.count(h) > 1})
    if dup:
        raise ConfigError(f"{name}: column name '{dup[0]}' appears more than once in the header")
    if columns:
        for c in columns:
            if c not in have:
                raise ConfigError(missing_msg(c))
        if time_column in columns:
            raise ConfigError(f"{name}: column '{time_column}' is the time column; leave it "
                              "out of --columns")
        return tuple(columns)
    return tuple(h for h in have if h != time_column)


def read_table(path: str | os.PathLike, *, time_column: str | None = None,
               columns: list[str] | tuple[str, ...] | None = None,
               delimiter: str | None = None, numeric_only: bool = False) -> Table:
    """Read a CSV (delimiter sniffed unless given) or Parquet table.

    *columns* None picks every column but the time column; with *numeric_only* a column
    that is not numeric is then left out instead of being an error.
    """
    p = Path(path)
    name = _name(p)
    if p.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(p, time_column, columns, numeric_only)
    header, rows = _sniff(p, delimiter)
    if not rows:
        raise ConfigError(f"{name}: no data rows under the header")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ConfigError(f"{name}: row {i} has {len(r)} cells but the header has "
                              f"{len(header)} (wrong --delimiter?)")
    cols = select_columns(name, header, columns, time_column)
    idx = {h: j for j, h in enumerate(header)}
    data, keep = [], []
    for c in cols:
        cells = [r[idx[c]] for r in rows]
        try:
            data.append(_numbers(name, c, cells))
            keep.append(c)
        except ConfigError:
            if not (numeric_only and not columns):
                raise
    if not keep:
        raise ConfigError(f"{name}: no numeric columns (columns: {', '.join(header)})")
    values = np.column_stack(data)
    if time_column is not None:
        text = [r[idx[time_column]].strip() for r in rows]
        t, kind = _times(name, time_column, text)
    else:
        t, kind = np.arange(len(rows), dtype=np.float64), "row"
        text = [str(i) for i in range(len(rows))]
    _check_order(name, time_column, t)
    return Table(name, tuple(keep), values, t, tuple(text), time_column, kind)


def _check_order(name: str, time_column: str | None, t: np.ndarray) -> None:
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise ConfigError(f"{name}: time column '{time_column}' goes backwards at row {i}; "
                          "sort the table by time")


def _read_parquet(p: Path, time_column, columns, numeric_only: bool) -> Table:
    name = _name(p)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{name}: reading Parquet needs pyarrow (pip install pyarrow, or "
                          "export the table as CSV)") from None
    try:
        tab = pq.read_table(p)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{name}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    header = list(tab.column_names)
    cols = select_columns(name, header, columns, time_column)
    data, keep = [], []
    for c in cols:
        col = tab.column(c)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or \
                pa.types.is_boolean(col.type):
            data.append(col.cast(pa.float64()).to_numpy(zero_copy_only=False))
            keep.append(c)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                data.append(_numbers(name, c, [("" if v is None else v) for v in col.to_pylist()]))
                keep.append(c)
            except ConfigError:
                if not (numeric_only and not columns):
                    raise
        elif not (numeric_only and not columns):
            raise ConfigError(f"{name}: column '{c}' has type {col.type}, not numbers")
    if not keep:
        raise ConfigError(f"{name}: no numeric columns (columns: {', '.join(header)})")
    values = np.column_stack(data).astype(np.float64)
    if time_column is None:
        t, kind, text = np.arange(tab.num_rows, dtype=np.float64), "row", None
    else:
        col = tab.column(time_column)
        if pa.types.is_timestamp(col.type):
            if col.null_count:
                raise ConfigError(f"{name}: time column '{time_column}' has empty cells")
            if col.type.tz is None:
                col = pc.assume_timezone(col, "UTC")
            t = col.cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_numpy(
                zero_copy_only=False) / 1e6
            kind = "timestamp"
            text = [datetime.fromtimestamp(x, UTC).isoformat() for x in t]
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            t, kind = col.cast(pa.float64()).to_numpy(zero_copy_only=False), "number"
            if np.isnan(t).any():
                raise ConfigError(f"{name}: time column '{time_column}' row "
                                  f"{int(np.flatnonzero(np.isnan(t))[0])}: empty")
            text = None
        else:
            text = [("" if v is None else str(v)) for v in col.to_pylist()]
            t, kind = _times(name, time_column, text)
    if text is None:
        text = [repr(float(x)) if not float(x).is_integer() else str(int(x)) for x in t]
    _check_order(name, time_column, t)
    return Table(name, tuple(keep), values, np.asarray(t, np.float64), tuple(text),
                 time_column, kind)


# ----------------------------------------------------------------- gateway buffer
def read_buffer_scores(path: str | os.PathLike, since: float | None = None,
                       until: float | None = None, n_features: int | None = None) -> ScoreColumns:
    """Score rows with features between *since* and *until* (unix s, inclusive/exclusive).

    Opened read-only (``mode=ro`` URI), so a running gateway is undisturbed. Rows of
    another feature width than *n_features* (default: the latest row's) are skipped.
    """
    with BufferQueries.open(path, readonly=True) as q:
        return q.score_columns(since, until, n_features)


def read_buffer_labels(path: str | os.PathLike) -> list[EventLabel]:
    """Operators' labels joined to their events, oldest first, each with the next reset
    event's time (None if none came)."""
    with BufferQueries.open(path, readonly=True) as q:
        return q.event_labels()
