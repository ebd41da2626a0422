"""The gateway's local buffer: one SQLite file in WAL mode, bounded in size.

One writer (the recorder's thread, through :class:`Buffer`) and any number of readers
and small writers in other processes (the sync job, ``sensorml label``, offline scoring,
training, the demo report, through :class:`~sensorml.buffer.queries.BufferQueries`)
share the file; WAL lets them read while it writes. The schema comes from named
migrations recorded in a ``migrations`` table (:mod:`sensorml.buffer.migrate`); a file
written by a newer sensorml is refused rather than guessed at.

Tables and their priority (retention and sync; 0 is kept longest):

=============  ========  ==========================================================
table          priority  rows
=============  ========  ==========================================================
events         0         trips, alarms, warnings, resets, model/source changes...
labels         0         operators' verdicts on events (true_fault | false_alarm)
scores         1         one per window: score, verdict, model version, features
raw_windows    2 / 3     raw samples around alarms (2) and sampled normal ones (3)
=============  ========  ==========================================================

Every data table has ``synced_at`` (NULL until the cloud store confirmed the row) and
AUTOINCREMENT ids, so ids are never reused after eviction and a sync cursor stays valid.
Blobs: ``scores.features`` is little-endian float32 (NULL when not kept);
``raw_windows.data`` is C-ordered samples of ``dtype`` with ``shape`` (JSON list).

Space keeping (the size cap, the filesystem's free-space reserve, the ballast file, WAL
checkpoints) is the buffer's :class:`~sensorml.buffer.space.SpaceKeeper`, ``buffer.space``.

Plain ``sqlite3`` here, not sqlite-utils: this is the gateway's hot write path. Scores go
in as multi-row INSERTs in one explicit transaction: 380-430k rows/s in batches of 256 on
a 2-vCPU machine, 2.4-2.7x what sqlite-utils' ``insert_all`` reached on the same rows,
schema and pragmas (157-161k rows/s); ``python -m benchmarks buffer`` prints both side by
side. Nor does the gateway process import sqlite-utils at all (with click, pluggy and
dateutil it added 7 MB to a recorder process's peak RSS).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with Buffer(d / "b.db", device="pump-1") as b:
...     eid = b.add_event("trip", {"cause": "limit"}, t=5.0)
...     b.pending_trip()
PendingTrip(id=1, t=5.0, detail={'cause': 'limit'})
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sensorml.buffer.connection import (
    configure,
    connect,
    default_free_reserve,
    pending_migrations,
    rollback_quietly,
)
from sensorml.buffer.migrate import apply_migrations
from sensorml.buffer.rows import PendingTrip
from sensorml.buffer.schema import TABLES, event_severity, insert_sql, rows_per_statement, to_json
from sensorml.buffer.space import SpaceKeeper
from sensorml.errors import StoreError

__all__ = ["Buffer", "integrity_problem", "move_aside"]


class Buffer:
    """The gateway's side of the SQLite store. Not thread-safe: use it from the thread
    that opened it.

    ``max_bytes`` caps the live pages of the main file (checked every ``check_every``
    commits or after ~1/32 of the cap was written); ``max_pages`` is a hard SQLite
    ``max_page_count`` (a quota; writes past it fail with 'database or disk is full').
    ``readonly=True`` opens without migrating or writing, for other processes.
    ``free_reserve`` is the bytes the space keeper keeps free on the filesystem
    (default: an eighth of it, at most 64 MiB).
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 256 << 20,
                 clock: Callable[[], float] = time.time, readonly: bool = False,
                 device: str | None = None, max_pages: int | None = None,
                 check_every: int = 32, note_every_s: float = 60.0,
                 wal_autocheckpoint: int = 4000, busy_timeout_s: float = 5.0,
                 free_reserve: int | None = None) -> None:
        if max_bytes < 64 << 10:
            raise StoreError(f"buffer.max_bytes: {max_bytes} is below the minimum 65536 bytes")
        self.path = Path(path)
        self.clock = clock
        self.readonly = readonly
        reserve = default_free_reserve(self.path.parent) if free_reserve is None \
            else int(free_reserve)
        self.conn = connect(self.path, readonly=readonly, busy_timeout_s=busy_timeout_s)
        try:
            if not readonly:
                configure(self.conn, self.path, max_bytes=int(max_bytes), free_reserve=reserve,
                          wal_autocheckpoint=wal_autocheckpoint, max_pages=max_pages)
            page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
            if pending_migrations(self.conn, self.path, readonly=readonly):
                apply_migrations(self.conn, self.path, clock)
            evicted = {} if readonly else \
                {t: int(self.get_meta(f"evicted.{t}") or 0) for t in TABLES}
            self.space = SpaceKeeper(self.conn, self.path, page_size=page_size,
                                     max_bytes=max_bytes, free_reserve=reserve, clock=clock,
                                     set_meta=self.set_meta, note=self._note, evicted=evicted,
                                     check_every=check_every, note_every_s=note_every_s)
            if not readonly:
                self.space.restore_ballast(headroom=8)  # only with plenty of room at open
                if device is not None:
                    self.set_meta("device_id", device)
            self.device = device or self.get_meta("device_id") or ""
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StoreError(f"{self.path}: cannot open buffer ({e}); move the file away "
                             "or set buffer.path to another file") from None
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        """Note pending evictions, checkpoint and close (idempotent)."""
        if getattr(self, "conn", None) is None:
            return
        try:
            if not self.readonly:
                self.space.note_evictions(force=True)
                self.space.checkpoint("PASSIVE")
        except sqlite3.Error:
            pass
        self.conn.close()
        self.conn = None  # type: ignore[assignment]

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                          "DO UPDATE SET value = excluded.value", (key, str(value)))

    # -------------------------------------------------------------- writes
    def event_row(self, kind: str, detail: dict | None, t: float | None = None,
                  priority: int = 0) -> tuple:
        """The ``events`` row tuple for :meth:`write` (detail encoded as JSON)."""
        detail = detail or {}
        mv = detail.get("model_version")
        return (self.clock() if t is None else float(t), str(kind), event_severity(kind),
                int(priority), str(detail.get("device") or self.device),
                None if mv is None else str(mv), to_json(detail))

    def write(self, events: Sequence[tuple] = (), scores: Sequence[tuple] = (),
              raws: Sequence[tuple] = (), *, enforce: bool = True) -> None:
        """Insert rows in one transaction (row tuples in ``INSERT_COLUMNS`` order), with
        multi-row INSERT statements (see :func:`~sensorml.buffer.schema.insert_sql`);
        then, unless ``enforce`` is false, let the space keeper check the cap.

        Raises ``sqlite3.Error`` as is (the recorder handles 'database or disk is full').
        """
        self._writable()
        c = self.conn
        c.execute("BEGIN")
        try:
            for table, rows in (("events", events), ("scores", scores), ("raw_windows", raws)):
                per = rows_per_statement(table)
                for k in range(0, len(rows), per):
                    chunk = rows[k:k + per]
                    c.execute(insert_sql(table, len(chunk)), [v for r in chunk for v in r])
            c.execute("COMMIT")
        except BaseException:
            rollback_quietly(c)
            raise
        self.space.wrote(len(events) * 200 + len(scores) * 220
                         + sum(len(r[-1]) + 200 for r in raws), check=enforce)

    def add_event(self, kind: str, detail: dict | None = None, t: float | None = None,
                  priority: int = 0) -> int:
        """Insert one event now; returns its id."""
        self.write(events=[self.event_row(kind, detail, t, priority)])
        return self.conn.execute("SELECT max(id) FROM events").fetchone()[0]

    def _note(self, detail: dict, t: float) -> None:
        """The space keeper's note of an eviction round: a ``buffer`` event."""
        self.write(events=[self.event_row("buffer", detail, t)], enforce=False)

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path}: buffer opened read-only; open it without readonly=True")

    # --------------------------------------------------------------- reads
    def pending_trip(self) -> PendingTrip | None:
        """The newest trip event if no reset came after it (a latch to restore after a
        restart), else None."""
        row = self.conn.execute("SELECT id, t, kind, detail FROM events WHERE kind IN "
                                "('trip', 'reset') ORDER BY id DESC LIMIT 1").fetchone()
        if row is None or row[2] != "trip":
            return None
        try:
            detail = json.loads(row[3])
        except ValueError:
            detail = {}
        return PendingTrip(row[0], row[1], detail if isinstance(detail, dict) else {})

    def stats(self) -> dict[str, Any]:
        """Size, cap and eviction counters (evictions are cumulative across restarts)."""
        return {"path": str(self.path), **self.space.stats(),
                "auto_vacuum": self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]}


def integrity_problem(path: Path) -> str | None:
    """``PRAGMA quick_check`` of the buffer at ``path``, read-only: None if it is sound
    (or absent), else what is wrong, in one line. O(size): about a second per 100 MB."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                               isolation_level=None, timeout=5.0)
    except sqlite3.Error as e:
        return str(e)
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.Error as e:
        return str(e)
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found)[:300]


def move_aside(path: Path, stamp: str) -> Path:
    """Rename a damaged buffer (and its -wal/-shm) to ``<name>.corrupt-<stamp>``, kept for
    inspection; returns the new name of the main file."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm", ""):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.replace(target.with_name(target.name + suffix))
    return target
