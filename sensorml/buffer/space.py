"""How the buffer keeps within its space: the size cap, the filesystem's free space, the
ballast file and WAL checkpoints. :class:`SpaceKeeper` is a part the
:class:`~sensorml.buffer.db.Buffer` holds (``buffer.space``); everything it uses is given
to it: the connection, the file's path and page size, the cap, the free-space reserve,
a clock, where to persist its eviction counters and how to note an eviction round.

- The cap: when the live pages pass ``max_bytes``, rows are evicted lowest priority
  first (``EVICTION_ORDER``: raw windows, then scores, then low-severity events and
  labels, alarm and trip events last), synced before unsynced, oldest first; the file
  shrinks through ``auto_vacuum=INCREMENTAL`` and a checkpoint. Evictions are counted
  (persisted in ``meta``) and noted as a ``buffer`` event at most every ``note_every_s``.
  :meth:`SpaceKeeper.wrote` decides after each commit whether to check (every
  ``check_every`` commits, or after ~1/32 of the cap was written).
- The filesystem: :meth:`SpaceKeeper.guard_free_space` keeps ``free_reserve`` bytes free
  (by default an eighth of the filesystem, at most 64 MiB) by evicting raw windows and
  scores, never events.
- The ballast: ``<buffer>.ballast`` (256 KiB or 1/32 of the filesystem) is released when
  the disk is full anyway, so that an eviction and a checkpoint have room to run, and
  made again when there is room.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensorml.buffer.connection import rollback_quietly
from sensorml.buffer.schema import EVICTION_ORDER, TABLES

__all__ = ["SpaceKeeper"]


class SpaceKeeper:
    """Size cap, free-space reserve, ballast and checkpoints of one buffer file.

    ``set_meta(key, value)`` persists the eviction counters (inside the eviction's
    transaction); ``note(detail, t)`` records an eviction round (the buffer writes a
    ``buffer`` event); ``evicted`` are the counters persisted so far.
    """

    #: bytes kept in ``<buffer>.ballast`` beside the file: when the filesystem fills up,
    #: the writer deletes it so that eviction and a checkpoint have room to run
    BALLAST_BYTES = 256 * 1024

    def __init__(self, conn: sqlite3.Connection, path: Path, *, page_size: int, max_bytes: int,
                 free_reserve: int, clock: Callable[[], float],
                 set_meta: Callable[[str, str], None], note: Callable[[dict, float], None],
                 evicted: dict[str, int] | None = None, check_every: int = 32,
                 note_every_s: float = 60.0) -> None:
        self.conn, self.path, self.page_size = conn, path, page_size
        self.max_bytes, self.free_reserve = int(max_bytes), int(free_reserve)
        self.clock, self.set_meta, self.note = clock, set_meta, note
        self.check_every, self.note_every_s = check_every, note_every_s
        self.evicted = {t: int((evicted or {}).get(t, 0)) for t in TABLES}
        self.evict_rounds = self.checkpoints = self.cap_errors = 0
        self.last_cap_error: str | None = None
        self._pending_note = dict.fromkeys(TABLES, 0)
        self._last_note = float("-inf")
        self._commits = self._written = 0

    # ----------------------------------------------------------------- the cap
    def used_bytes(self) -> int:
        """Bytes in live pages of the main file (excludes the freelist and the WAL)."""
        c = self.conn
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self.page_size

    def file_bytes(self) -> int:
        """Size of the main file plus its WAL on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

    def wrote(self, nbytes: int, *, check: bool = True) -> None:
        """After a commit of about *nbytes*: unless ``check`` is false, enforce the cap
        every ``check_every`` commits or after ~1/32 of the cap. The rows are committed,
        so a failed eviction is counted (``cap_errors``), never raised as a failed write."""
        self._commits += 1
        self._written += nbytes
        if check and (self._commits >= self.check_every or self._written > self.max_bytes >> 5):
            try:
                self.enforce_cap()
            except sqlite3.Error as e:
                self.cap_errors += 1
                self.last_cap_error = f"{type(e).__name__}: {e}"

    def enforce_cap(self, *, force: bool = False, target: int | None = None,
                    keep_events: bool = False) -> dict[str, int]:
        """Evict by priority until live pages are under 90 % of ``max_bytes``.

        ``force`` (after 'database or disk is full') frees at least ~10 % of the live
        pages even when under the cap; ``target`` (live bytes) evicts down to it;
        ``keep_events`` leaves events and labels alone.
        Returns rows evicted per table this round.
        """
        self._commits = self._written = 0
        used = self.used_bytes()
        if used <= self.max_bytes and not force and (target is None or used <= target):
            return {}
        goal = int(self.max_bytes * 0.9)
        if force:
            goal = min(goal, int(used * 0.9))
        if target is not None:
            goal = min(goal, int(target))
        c, round_ = self.conn, dict.fromkeys(TABLES, 0)
        c.execute("BEGIN IMMEDIATE")
        try:
            for table, where in EVICTION_ORDER:
                if keep_events and table in ("events", "labels"):
                    continue
                chunk = 32
                while used > goal:
                    n = c.execute(
                        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where}"
                        " ORDER BY id LIMIT ?)", (chunk,)).rowcount
                    if n <= 0:
                        break
                    round_[table] += n
                    used = self.used_bytes()
                    chunk = min(chunk * 2, 4096)
                if used <= goal:
                    break
            for t, n in round_.items():
                if n:
                    self.evicted[t] += n
                    self._pending_note[t] += n
                    self.set_meta(f"evicted.{t}", str(self.evicted[t]))
            c.execute("COMMIT")
        except BaseException:
            rollback_quietly(c)
            raise
        self.evict_rounds += 1
        # execute() steps a row-less pragma once (one page); executescript runs it to the end
        c.executescript("PRAGMA incremental_vacuum;")
        if any(round_.values()):  # a round that found nothing to evict is not news
            self.note_evictions()
        return {t: n for t, n in round_.items() if n}

    def note_evictions(self, force: bool = False) -> None:
        """Record the evictions since the last note (at most every ``note_every_s``
        unless *force*)."""
        now = self.clock()
        if not any(self._pending_note.values()) or (
                not force and now - self._last_note < self.note_every_s):
            return
        detail = {"evicted": {t: n for t, n in self._pending_note.items() if n},
                  "used_bytes": self.used_bytes(), "max_bytes": self.max_bytes}
        self._last_note = now
        self._pending_note = dict.fromkeys(TABLES, 0)
        self.note(detail, now)

    # ---------------------------------------------------------- the filesystem
    def guard_free_space(self) -> dict[str, int]:
        """Keep ``free_reserve`` bytes free on the filesystem: when less is free, truncate
        the WAL, then evict by priority what the shortfall needs (at least 10 % of the live
        pages; raw windows and scores only) and give the pages back.
        Returns rows evicted per table ({} when there was room)."""
        reserve = self.free_reserve
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return {}
        if free >= reserve:
            return {}
        try:
            self.checkpoint("TRUNCATE")
            free = shutil.disk_usage(self.path.parent).free
        except (sqlite3.Error, OSError):
            pass
        if free >= reserve:
            return {}
        used = self.used_bytes()
        out = self.enforce_cap(target=min(used - (reserve - free), int(used * 0.9)),
                               keep_events=True)  # events: only a full disk evicts them
        try:
            self.checkpoint("TRUNCATE")  # the file shrinks at the checkpoint
        except sqlite3.Error:
            pass
        return out

    # ------------------------------------------------------------- ballast
    @property
    def ballast_path(self) -> Path:
        return self.path.with_name(self.path.name + ".ballast")

    def restore_ballast(self, headroom: int = 2) -> bool:
        """(Re)create the ballast file if it is missing and the filesystem has more than
        ``headroom`` times its size free. Its size is 256 KiB or 1/32 of the filesystem,
        whichever is smaller. True if the ballast is there afterwards."""
        p = self.ballast_path
        try:
            if p.exists():
                return True
            du = shutil.disk_usage(p.parent)
            size = min(self.BALLAST_BYTES, du.total // 32)
            if size > 0 and du.free > headroom * size:
                with open(p, "wb") as f:
                    f.write(b"\0" * size)
                    f.flush()
                    os.fsync(f.fileno())
                return True
        except OSError:  # no room for it: nothing to give back later either
            try:
                p.unlink()
            except OSError:
                pass
        return False

    def release_ballast(self) -> bool:
        """Free the reserved space (the filesystem is full); True if there was some."""
        try:
            self.ballast_path.unlink()
            return True
        except OSError:
            return False

    # --------------------------------------------------------- checkpoints
    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint: ``(busy, wal_frames, checkpointed_frames)``."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"checkpoint mode {mode!r}")
        self.checkpoints += 1
        return tuple(self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())

    def stats(self) -> dict[str, Any]:
        """Size, cap and eviction counters (evictions are cumulative across restarts)."""
        return {"used_bytes": self.used_bytes(), "file_bytes": self.file_bytes(),
                "max_bytes": self.max_bytes, "evicted": dict(self.evicted),
                "evict_rounds": self.evict_rounds, "checkpoints": self.checkpoints,
                "cap_errors": self.cap_errors, "last_cap_error": self.last_cap_error}
