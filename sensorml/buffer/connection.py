"""Opening a buffer file: the connection, the gateway's pragmas, the schema check, and
what SQLite's errors mean (:func:`is_disk_full`). Plain ``sqlite3``: the gateway opens
its buffer through here, and loads nothing it does not use.

>>> import sqlite3
>>> c = sqlite3.connect(":memory:", isolation_level=None)
>>> c.execute("PRAGMA max_page_count = 2").fetchone()
(2,)
>>> try:
...     _ = c.execute("CREATE TABLE t (x)").execute("INSERT INTO t VALUES (zeroblob(99999))")
... except sqlite3.Error as e:
...     is_disk_full(e)
True
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from sensorml.buffer.schema import MIGRATIONS
from sensorml.errors import StoreError

__all__ = ["configure", "connect", "default_free_reserve", "is_disk_full",
           "pending_migrations", "rollback_quietly"]


def connect(path: Path, *, readonly: bool, busy_timeout_s: float = 5.0,
            must_exist: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); ``readonly`` opens
    with a ``mode=ro`` URI, so another process's reads never write the file."""
    if (readonly or must_exist) and not path.exists():
        raise StoreError(f"{path}: no buffer here (has the gateway run?)")
    if not readonly and not path.parent.is_dir():
        raise StoreError(f"{path}: directory {path.parent} does not exist")
    target = path.resolve().as_uri() + "?mode=ro" if readonly else path
    try:
        conn = sqlite3.connect(target, uri=readonly, isolation_level=None, timeout=busy_timeout_s)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open buffer ({e}); check the path "
                         "and its permissions") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if not readonly:  # WAL: durable at the checkpoint, never torn
            conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"{path}: cannot open buffer ({e})") from None
    return conn


def configure(conn: sqlite3.Connection, path: Path, *, max_bytes: int, free_reserve: int,
              wal_autocheckpoint: int, max_pages: int | None) -> None:
    """The writer's pragmas: WAL, incremental auto-vacuum (a new file only), a bounded WAL,
    and ``max_pages`` as a hard quota when given."""
    c = conn
    # Only takes effect before the first table is created, i.e. on a new file.
    c.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(f"{path}: cannot switch to WAL mode (got {mode!r}); "
                         "is it on a network filesystem?")
    # Bound the WAL to about a quarter of the cap (the recorder also checkpoints when idle)
    # ... and to an eighth of the free space on its filesystem and half the free-space
    # reserve: a checkpoint copies the WAL's new pages into the file, which grows by
    # them, so a WAL larger than what is left free could never be checkpointed again.
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = max_bytes
    reserve = free_reserve or max_bytes
    pages = max(16, min(int(wal_autocheckpoint), max_bytes // 4 // 4096,
                        free // 8 // 4096, reserve // 2 // 4096))
    wal_limit = max(pages * 4096, min(max_bytes // 4, 64 << 20, reserve // 2))
    c.execute(f"PRAGMA wal_autocheckpoint = {pages}")
    c.execute(f"PRAGMA journal_size_limit = {wal_limit}")
    if max_pages:
        c.execute(f"PRAGMA max_page_count = {int(max_pages)}")


def default_free_reserve(directory: Path) -> int:
    """An eighth of the filesystem at *directory*, at most 64 MiB (0 if it cannot be read)."""
    try:
        return min(shutil.disk_usage(directory).total // 8, 64 << 20)
    except OSError:
        return 0


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'migrations'").fetchone():
        return []
    return [name for (name,) in conn.execute("SELECT name FROM migrations")]


def pending_migrations(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> list[str]:
    """Names of the migrations this file lacks (applying them is
    :func:`sensorml.buffer.migrate.apply_migrations`). A file written by a newer
    sensorml is refused rather than guessed at, and so is, read-only, an older one."""
    known = [name for name, _ in MIGRATIONS]
    applied = applied_migrations(conn)
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise StoreError(
            f"{path}: written by a newer sensorml (unknown migrations: "
            f"{', '.join(unknown)}); upgrade sensorml or set buffer.path to another file")
    pending = [n for n in known if n not in applied]
    if pending and readonly:
        raise StoreError(f"{path}: buffer schema is older than this sensorml "
                         f"(missing {', '.join(pending)}); start the gateway once to migrate it")
    return pending


def is_disk_full(e: BaseException) -> bool:
    """True for "database or disk is full": SQLite's ``SQLITE_FULL`` (a full filesystem or
    a ``max_page_count`` quota), or ``ENOSPC``/``EDQUOT`` from the operating system."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)  # absent on errors not raised by SQLite
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def rollback_quietly(c: sqlite3.Connection) -> None:
    # SQLite already rolled back on some errors (e.g. SQLITE_FULL): don't mask them.
    if c.in_transaction:
        c.execute("ROLLBACK")
