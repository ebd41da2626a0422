"""Applying the buffer's named migrations, with sqlite-utils.

Each migration of :data:`~sensorml.buffer.schema.MIGRATIONS` is SQL text (expression
indexes, CHECK constraints and AUTOINCREMENT are best said in SQL) run once, and recorded
in the ``migrations`` table (``name``, ``applied_at``) in the same transaction. The table
is the one every buffer file has had since the first release, so files already in the
field open unchanged; sqlite-utils' own ``Migrations`` keeps a differently shaped
``_sqlite_migrations`` table and neither refuses a newer file's unknown migrations nor
serialises two processes opening a new file at once, which this module does with one
``BEGIN IMMEDIATE``.

Imported only when :func:`~sensorml.buffer.connection.pending_migrations` finds
something to apply (a new file, or the first open after an upgrade), so a gateway
restarted on an up-to-date buffer never loads sqlite-utils.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from sensorml.buffer.connection import pending_migrations, rollback_quietly
from sensorml.buffer.rows import Migration
from sensorml.buffer.schema import MIGRATIONS

__all__ = ["apply_migrations", "applied"]

TABLE = "migrations"


def database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over an open connection (no plugins, no pragma of its own)."""
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def apply_migrations(conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> list[str]:
    """Apply what is pending in one ``BEGIN IMMEDIATE`` transaction (a concurrent opener
    waits for it, then finds nothing left to do); returns the names applied."""
    db = database(conn)
    db.execute("BEGIN IMMEDIATE")
    try:
        pending = pending_migrations(conn, path, readonly=False)  # again, under the lock
        if pending and not db[TABLE].exists():
            db[TABLE].create({"name": str, "applied_at": float}, pk="name",
                             not_null={"applied_at"})
        for name, sql in MIGRATIONS:
            if name not in pending:
                continue
            for stmt in filter(str.strip, sql.split(";")):
                db.execute(stmt)
            db[TABLE].insert({"name": name, "applied_at": clock()})
        db.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return pending


def applied(db: sqlite_utils.Database) -> list[Migration]:
    """Applied migrations in the order they were applied."""
    return [Migration(r["name"], r["applied_at"])
            for r in db[TABLE].rows_where(order_by="rowid", select="name, applied_at")]
