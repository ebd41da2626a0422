"""The gateway's local buffer: one SQLite file in WAL mode, bounded in size.

One writer (the recorder's thread) and any number of readers in other processes
(`sensorml status`, the sync job) share the file; WAL lets them read while it writes.
The schema comes from named migrations recorded in a ``migrations`` table; a file
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

When the live pages pass ``max_bytes``, rows are evicted lowest priority first, synced
before unsynced, oldest first; alarm and trip events go last. The file shrinks through
``auto_vacuum=INCREMENTAL`` (set when the file is created). The WAL beside it is kept
small by checkpoints on the writer thread and ``journal_size_limit``. The filesystem
is a cap too: :meth:`Buffer.guard_free_space` (called by the recorder after its commits)
evicts by the same priorities when less than a reserve (an eighth of the filesystem, at
most 64 MiB) is free, so the buffer never fills the disk it shares with the system.
All of that lives in :mod:`sensorml.buffer.space`.

Plain ``sqlite3``, not sqlite-utils: the hot path needs ``executemany`` in one explicit
transaction (sqlite-utils' ``insert_all`` costs ~35 µs a call), and the schema uses
things best written as SQL (expression indexes, CHECK constraints, AUTOINCREMENT), so
migrations are SQL text too; nothing here would get shorter with it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with Buffer(d / "b.db") as b:
...     eid = b.add_event("alarm", {"score": 3.5})
...     _ = b.add_label(eid, "true_fault", "bearing noise", "ana")
...     b.counts()["events"], b.counts()["labels"]["unsynced"]
({'rows': 1, 'unsynced': 1}, 1)
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sensorml.buffer.schema import (
    EVICTION_ORDER,
    LABEL_VERDICTS,
    MIGRATIONS,
    RAW_PRIORITY,
    SEVERITY,
    SYNC_ORDER,
    TABLES,
    UNSYNCED_ORDER,
    event_severity,
    insert_sql,
    rows_per_statement,
    to_json,
)
from sensorml.buffer.space import BufferSpace, rollback_quietly
from sensorml.errors import StoreError

__all__ = ["Buffer", "EVICTION_ORDER", "MIGRATIONS", "RAW_PRIORITY", "SEVERITY", "SYNC_ORDER",
           "TABLES", "event_severity", "to_json"]


class Buffer(BufferSpace):
    """The SQLite store. Not thread-safe: use it from the thread that opened it.

    ``max_bytes`` caps the live pages of the main file (checked every ``check_every``
    commits or after ~1/32 of the cap was written); ``max_pages`` is a hard SQLite
    ``max_page_count`` (a quota; writes past it fail with 'database or disk is full').
    ``readonly=True`` opens without migrating or writing, for other processes.
    ``free_reserve`` is the bytes :meth:`guard_free_space` keeps free on the filesystem
    (default :meth:`default_free_reserve`: an eighth of it, at most 64 MiB).
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
        self.max_bytes = int(max_bytes)
        self.free_reserve = self.default_free_reserve() if free_reserve is None \
            else int(free_reserve)
        self.clock = clock
        self.readonly = readonly
        self.check_every = check_every
        self.note_every_s = note_every_s
        self.evicted = dict.fromkeys(TABLES, 0)
        self.evict_rounds = 0
        self.cap_errors = 0
        self.last_cap_error: str | None = None
        self.checkpoints = 0
        self._pending_note = dict.fromkeys(TABLES, 0)
        self._last_note = float("-inf")
        self._commits = 0
        self._written = 0
        self.conn = self._connect(busy_timeout_s)
        try:
            if not readonly:
                self._configure(wal_autocheckpoint, max_pages)
            self.page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self._migrate()
            if not readonly:
                self.restore_ballast(headroom=8)  # only with plenty of room at open
                if device is not None:
                    self.set_meta("device_id", device)
                for t in TABLES:
                    self.evicted[t] = int(self.get_meta(f"evicted.{t}") or 0)
            self.device = device or self.get_meta("device_id") or ""
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StoreError(f"{self.path}: cannot open buffer ({e}); move the file away "
                             "or set buffer.path to another file") from None
        except BaseException:
            self.conn.close()
            raise

    # ------------------------------------------------------------- opening
    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        if self.readonly and not self.path.exists():
            raise StoreError(f"{self.path}: no buffer here (has the gateway run?)")
        if not self.readonly and not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: directory {self.path.parent} does not exist")
        target = self.path.resolve().as_uri() + "?mode=ro" if self.readonly else self.path
        try:
            conn = sqlite3.connect(target, uri=self.readonly, isolation_level=None,
                                   timeout=busy_timeout_s)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open buffer ({e}); check the path "
                             "and its permissions") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"{self.path}: cannot open buffer ({e})") from None
        return conn

    def _configure(self, wal_autocheckpoint: int, max_pages: int | None) -> None:
        c = self.conn
        # Only takes effect before the first table is created, i.e. on a new file.
        c.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r}); "
                             "is it on a network filesystem?")
        c.execute("PRAGMA synchronous = NORMAL")
        # Bound the WAL to about a quarter of the cap (the recorder also checkpoints when idle)
        # ... and to an eighth of the free space on its filesystem and half the free-space
        # reserve: a checkpoint copies the WAL's new pages into the file, which grows by
        # them, so a WAL larger than what is left free could never be checkpointed again.
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = self.max_bytes
        reserve = self.free_reserve or self.max_bytes
        pages = max(16, min(int(wal_autocheckpoint), self.max_bytes // 4 // 4096,
                            free // 8 // 4096, reserve // 2 // 4096))
        wal_limit = max(pages * 4096, min(self.max_bytes // 4, 64 << 20, reserve // 2))
        c.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        c.execute(f"PRAGMA journal_size_limit = {wal_limit}")
        if max_pages:
            c.execute(f"PRAGMA max_page_count = {int(max_pages)}")

    def _applied(self) -> dict[str, float]:
        c = self.conn
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'migrations'").fetchone():
            return {}
        return dict(c.execute("SELECT name, applied_at FROM migrations"))

    def _migrate(self) -> None:
        known = [name for name, _ in MIGRATIONS]
        applied = self._applied()
        unknown = sorted(set(applied) - set(known))
        if unknown:
            raise StoreError(
                f"{self.path}: written by a newer sensorml (unknown migrations: "
                f"{', '.join(unknown)}); upgrade sensorml or set buffer.path to another file")
        if len(applied) == len(known):
            return
        if self.readonly:
            raise StoreError(f"{self.path}: buffer schema is older than this sensorml "
                             f"(missing {', '.join(n for n in known if n not in applied)}); "
                             "start the gateway once to migrate it")
        c = self.conn
        c.execute("BEGIN IMMEDIATE")  # serialises concurrent openers
        try:
            c.execute("CREATE TABLE IF NOT EXISTS migrations "
                      "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            applied = self._applied()
            for name, sql in MIGRATIONS:
                if name in applied:
                    continue
                for stmt in filter(str.strip, sql.split(";")):
                    c.execute(stmt)
                c.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                          (name, self.clock()))
            c.execute("COMMIT")
        except BaseException:
            rollback_quietly(c)
            raise

    def migrations(self) -> list[tuple[str, float]]:
        """Applied migrations ``(name, applied_at)`` in order."""
        return list(self.conn.execute("SELECT name, applied_at FROM migrations ORDER BY rowid"))

    def close(self) -> None:
        """Note pending evictions, checkpoint and close (idempotent)."""
        if getattr(self, "conn", None) is None:
            return
        try:
            if not self.readonly:
                if any(self._pending_note.values()):
                    self._note_evictions(force=True)
                self.checkpoint("PASSIVE")
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
        multi-row INSERT statements (see :func:`~sensorml.buffer.schema.insert_sql`).

        Raises ``sqlite3.OperationalError`` as is (the recorder handles 'disk is full').
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
        self._commits += 1
        self._written += len(events) * 200 + len(scores) * 220 + sum(len(r[-1]) + 200 for r in raws)
        if enforce and (self._commits >= self.check_every or self._written > self.max_bytes >> 5):
            try:  # the rows are committed: a failed eviction must not look like a failed write
                self.enforce_cap()
            except sqlite3.Error as e:
                self.cap_errors += 1
                self.last_cap_error = f"{type(e).__name__}: {e}"

    def add_event(self, kind: str, detail: dict | None = None, t: float | None = None,
                  priority: int = 0) -> int:
        """Insert one event now; returns its id."""
        self.write(events=[self.event_row(kind, detail, t, priority)])
        return self.conn.execute("SELECT max(id) FROM events").fetchone()[0]

    def add_label(self, event_id: int, verdict: str, note: str = "", author: str = "",
                  t: float | None = None) -> int:
        """Record an operator's verdict on an event; returns the label id."""
        if verdict not in LABEL_VERDICTS:
            raise StoreError(f"label verdict {verdict!r} is not one of {', '.join(LABEL_VERDICTS)}")
        self._writable()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if not c.execute("SELECT 1 FROM events WHERE id = ?", (int(event_id),)).fetchone():
                raise StoreError(f"label: event {event_id} does not exist in {self.path} "
                                 "(see `sensorml status` for recent event ids)")
            cur = c.execute("INSERT INTO labels (event_id, t, verdict, note, author) "
                            "VALUES (?, ?, ?, ?, ?)", (int(event_id), self.clock() if t is None
                                                       else float(t), verdict, note, author))
            c.execute("COMMIT")
        except BaseException:
            rollback_quietly(c)
            raise
        return int(cur.lastrowid)

    def mark_synced(self, table: str, ids: Iterable[int], t: float | None = None) -> int:
        """Set ``synced_at`` on rows the store confirmed; returns how many were updated."""
        _check_table(table)
        ts = self.clock() if t is None else float(t)
        rows = [(ts, int(i)) for i in ids]
        self._writable()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            before = c.total_changes
            c.executemany(f"UPDATE {table} SET synced_at = ? WHERE id = ?", rows)
            n = c.total_changes - before
            c.execute("COMMIT")
        except BaseException:
            rollback_quietly(c)
            raise
        return n

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path}: buffer opened read-only; open it without readonly=True")

    # --------------------------------------------------------------- reads
    def recent_events(self, limit: int = 20) -> list[dict]:
        """The newest events first, detail decoded."""
        cur = self.conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (int(limit),))
        rows = _dicts(cur)
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def pending_trip(self) -> dict | None:
        """The newest trip event if no reset came after it (a latch to restore after a
        restart), else None: ``{"id", "t", "detail"}``."""
        row = self.conn.execute("SELECT id, t, kind, detail FROM events WHERE kind IN "
                                "('trip', 'reset') ORDER BY id DESC LIMIT 1").fetchone()
        if row is None or row[2] != "trip":
            return None
        try:
            detail = json.loads(row[3])
        except ValueError:
            detail = {}
        return {"id": row[0], "t": row[1], "detail": detail if isinstance(detail, dict) else {}}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{table: {"rows": n, "unsynced": m}}`` for every data table."""
        out = {}
        for t in TABLES:
            n, u = self.conn.execute(
                f"SELECT count(*), coalesce(sum(synced_at IS NULL), 0) FROM {t}").fetchone()
            out[t] = {"rows": n, "unsynced": u}
        return out

    def unsynced(self, table: str, limit: int = 500) -> list[dict]:
        """Rows not yet confirmed by the store, highest priority first then oldest first
        (raw windows around alarms before sampled ones). Blobs come back as ``bytes``."""
        _check_table(table)
        if table == "raw_windows":  # one indexed range per priority, no sort of the table
            out: list[dict] = []
            for prio in sorted(set(RAW_PRIORITY.values())):
                if len(out) < limit:
                    out += _dicts(self.conn.execute(
                        "SELECT * FROM raw_windows WHERE priority = ? AND (synced_at IS NULL) = 1"
                        " ORDER BY id LIMIT ?", (prio, int(limit) - len(out))))
            return out
        cur = self.conn.execute(
            f"SELECT * FROM {table} WHERE (synced_at IS NULL) = 1 ORDER BY {UNSYNCED_ORDER[table]} "
            "LIMIT ?", (int(limit),))
        return _dicts(cur)

    def stats(self) -> dict[str, Any]:
        """Size, cap and eviction counters (evictions are cumulative across restarts)."""
        return {"path": str(self.path), "used_bytes": self.used_bytes(),
                "file_bytes": self.file_bytes(), "max_bytes": self.max_bytes,
                "evicted": dict(self.evicted), "evict_rounds": self.evict_rounds,
                "checkpoints": self.checkpoints, "cap_errors": self.cap_errors,
                "last_cap_error": self.last_cap_error,
                "auto_vacuum": self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]}


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise StoreError(f"buffer table {table!r} is not one of {', '.join(TABLES)}")


def _dicts(cur: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur]
