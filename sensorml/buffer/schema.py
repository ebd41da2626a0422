"""The buffer's schema: named migrations, row layouts, priorities and eviction order.

This is the sync contract: the sync job reads these tables and columns. A schema change
is a new migration appended to :data:`MIGRATIONS` (never an edit of an applied one);
its SQL is split on ``;``, so keep semicolons out of string literals.

Columns the sync job relies on: every data table has ``id`` (AUTOINCREMENT, never
reused), ``t`` (unix seconds, float) and ``synced_at`` (NULL until confirmed).
``events.severity`` is 0 info, 1 warn, 2 alarm, 3 trip; ``events.detail`` is JSON;
``scores.verdict`` is ``sensorml.edge.decider.Verdict`` as int; ``scores.features`` is
little-endian float32 or NULL; ``raw_windows.channels`` and ``.shape`` are JSON lists and
``.data`` is C-ordered samples of ``.dtype`` (numpy dtype string, e.g. ``<f4``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

__all__ = ["EVICTION_ORDER", "INSERT_COLUMNS", "LABEL_VERDICTS", "MIGRATIONS", "RAW_PRIORITY",
           "SEVERITY", "SYNC_ORDER", "TABLES", "UNSYNCED_ORDER", "event_severity", "insert_sql",
           "rows_per_statement", "to_json"]

TABLES = ("events", "labels", "scores", "raw_windows")
SYNC_ORDER = TABLES  # highest priority first
SEVERITY = {"trip": 3, "alarm": 2, "limit": 2, "watchdog": 2, "warn": 1}
RAW_PRIORITY = {"around_alarm": 2, "sample": 3}
LABEL_VERDICTS = ("true_fault", "false_alarm")

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_initial", """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    severity INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 0,
    device TEXT NOT NULL DEFAULT '', model_version TEXT, synced_at REAL,
    detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX events_sync ON events((synced_at IS NULL), id);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL, t REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('true_fault', 'false_alarm')),
    note TEXT NOT NULL DEFAULT '', author TEXT NOT NULL DEFAULT '', synced_at REAL);
CREATE INDEX labels_sync ON labels((synced_at IS NULL), id);
CREATE INDEX labels_event ON labels(event_id);
CREATE TABLE scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, window_seq INTEGER NOT NULL,
    score REAL NOT NULL, verdict INTEGER NOT NULL, model_version TEXT, synced_at REAL,
    features BLOB);
CREATE INDEX scores_sync ON scores((synced_at IS NULL), id);
CREATE TABLE raw_windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('around_alarm', 'sample')),
    priority INTEGER NOT NULL, channels TEXT NOT NULL, rate REAL NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, synced_at REAL, data BLOB NOT NULL);
CREATE INDEX raw_sync ON raw_windows(priority, (synced_at IS NULL), id);
"""),
)

# Eviction classes, first evicted first; within a class oldest (lowest id) first.
# The conditions match the partial-key expression indexes (priority, (synced_at IS NULL), id).
_SYNCED, _UNSYNCED, _ANY = "(synced_at IS NULL) = 0", "(synced_at IS NULL) = 1", "1"
EVICTION_ORDER: tuple[tuple[str, str], ...] = (
    ("raw_windows", f"priority = 3 AND {_SYNCED}"), ("raw_windows", f"priority = 3 AND {_UNSYNCED}"),
    ("raw_windows", f"priority = 2 AND {_SYNCED}"), ("raw_windows", f"priority = 2 AND {_UNSYNCED}"),
    ("raw_windows", _ANY),  # a priority written by a newer version, if any
    ("scores", _SYNCED), ("scores", _UNSYNCED),
    ("events", f"severity < 2 AND {_SYNCED}"), ("labels", _SYNCED),
    ("events", "severity < 2"), ("labels", _ANY),
    ("events", f"severity >= 2 AND {_SYNCED}"), ("events", _ANY),  # alarms and trips last
)

# Row tuples the writer inserts, in this column order.
INSERT_COLUMNS = {
    "events": ("t", "kind", "severity", "priority", "device", "model_version", "detail"),
    "scores": ("t", "window_seq", "score", "verdict", "model_version", "features"),
    "raw_windows": ("t", "reason", "priority", "channels", "rate", "dtype", "shape", "data"),
}
_MAX_PARAMS = 999  # SQLite's smallest SQLITE_MAX_VARIABLE_NUMBER (3.40 allows 32766)


def rows_per_statement(table: str) -> int:
    """How many rows one multi-row ``INSERT ... VALUES (..), (..)`` carries.

    >>> rows_per_statement("scores")
    166
    """
    return _MAX_PARAMS // len(INSERT_COLUMNS[table])


@functools.lru_cache(maxsize=64)
def insert_sql(table: str, nrows: int) -> str:
    """A multi-row INSERT for ``nrows`` rows.

    Why not ``executemany``: the sqlite3 module releases the GIL around every row's
    step, so when another thread keeps the GIL busy (the fast path) the writer waits up
    to a switch interval (5 ms) per *row*: 256 rows went from ~0.5 ms to ~900 ms in our
    measurement. One statement per ~160 rows releases it once per statement.

    >>> insert_sql("scores", 2)
    'INSERT INTO scores (t, window_seq, score, verdict, model_version, features) VALUES (?,?,?,?,?,?),(?,?,?,?,?,?)'
    """
    cols = INSERT_COLUMNS[table]
    one = "(" + ",".join("?" * len(cols)) + ")"
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ",".join([one] * nrows)


UNSYNCED_ORDER = {"events": "priority, id", "labels": "id", "scores": "id"}


def event_severity(kind: str) -> int:
    """0 info, 1 warn, 2 alarm (alarm, limit, watchdog), 3 trip.

    >>> event_severity("trip"), event_severity("limit"), event_severity("reload")
    (3, 2, 0)
    """
    return SEVERITY.get(kind, 0)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def to_json(detail: Any) -> str:
    """JSON text of an event's detail; numpy values become numbers, others ``str``.

    >>> to_json({"b": 1, "a": float("nan")})
    '{"b": 1, "a": NaN}'
    """
    return json.dumps(detail, default=_jsonable, separators=(", ", ": "))
