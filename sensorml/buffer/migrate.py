"""Applying the buffer's named migrations.

Each migration of :data:`~sensorml.buffer.schema.MIGRATIONS` is SQL text (expression
indexes, CHECK constraints and AUTOINCREMENT are best said in SQL) run once, and recorded
in the ``migrations`` table (``name``, ``applied_at``) in the same transaction, all of it
in one ``BEGIN IMMEDIATE`` so that two processes opening a new file at once (the gateway
and a sync timer at boot) serialise: the second finds nothing left to do. The table is
the one every buffer file has had since the first release, so files in the field open
unchanged (sqlite-utils' ``Migrations`` keeps a differently shaped ``_sqlite_migrations``
table and neither refuses a newer file's unknown migrations nor serialises openers).

Plain ``sqlite3``, though other processes read the buffer with sqlite-utils: the gateway
is usually the one that creates or upgrades the file, and importing sqlite-utils (with
click, pluggy and dateutil) there added 7 MB to its peak RSS (50 -> 57 MB measured, a
recorder process creating a buffer), which it would keep for its whole run.
:meth:`~sensorml.buffer.queries.BufferQueries.migrations` lists them with sqlite-utils.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sensorml.buffer.connection import pending_migrations, rollback_quietly
from sensorml.buffer.schema import MIGRATIONS

__all__ = ["apply_migrations"]


def apply_migrations(conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> list[str]:
    """Apply what is pending (checked again under the lock); returns the names applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                     "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        pending = pending_migrations(conn, path, readonly=False)
        for name, sql in MIGRATIONS:
            if name not in pending:
                continue
            for stmt in filter(str.strip, sql.split(";")):
                conn.execute(stmt)
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                         (name, clock()))
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return pending
