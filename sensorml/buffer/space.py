"""How the buffer keeps within its space: the size cap, the filesystem's free space, the
ballast file and WAL checkpoints. A mixin of :class:`sensorml.buffer.db.Buffer` (it uses the
buffer's connection, ``path``, ``max_bytes``, ``free_reserve``, counters and
:meth:`write`).

- The cap: when the live pages pass ``max_bytes``, rows are evicted lowest priority
  first (``EVICTION_ORDER``: raw windows, then scores, then low-severity events and
  labels, alarm and trip events last), synced before unsynced, oldest first; the file
  shrinks through ``auto_vacuum=INCREMENTAL`` and a checkpoint. Evictions are counted
  (persisted in ``meta``) and noted as a ``buffer`` event at most every ``note_every_s``.
- The filesystem: :meth:`guard_free_space` keeps a reserve free (an eighth of the
  filesystem, at most 64 MiB) by evicting raw windows and scores, never events.
- The ballast: ``<buffer>.ballast`` (256 KiB or 1/32 of the filesystem) is released when
  the disk is full anyway, so that an eviction and a checkpoint have room to run, and
  made again when there is room.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from sensorml.buffer.schema import EVICTION_ORDER, TABLES

__all__ = ["BufferSpace"]


class BufferSpace:
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
            self._note_evictions()
        return {t: n for t, n in round_.items() if n}

    def default_free_reserve(self) -> int:
        """An eighth of the buffer's filesystem, at most 64 MiB (0 if it cannot be read)."""
        try:
            return min(shutil.disk_usage(self.path.parent).total // 8, 64 << 20)
        except OSError:
            return 0

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

    def _note_evictions(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_note < self.note_every_s:
            return
        detail = {"evicted": {t: n for t, n in self._pending_note.items() if n},
                  "used_bytes": self.used_bytes(), "max_bytes": self.max_bytes}
        self._last_note = now
        self._pending_note = dict.fromkeys(TABLES, 0)
        self.write(events=[self.event_row("buffer", detail, now)], enforce=False)

    # ------------------------------------------------------------- ballast
    #: bytes kept in ``<buffer>.ballast`` beside the file: when the filesystem fills up,
    #: the writer deletes it so that eviction and a checkpoint have room to run
    BALLAST_BYTES = 256 * 1024

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

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint: ``(busy, wal_frames, checkpointed_frames)``."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"checkpoint mode {mode!r}")
        self.checkpoints += 1
        return tuple(self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())


def rollback_quietly(c: sqlite3.Connection) -> None:
    # SQLite already rolled back on some errors (e.g. SQLITE_FULL): don't mask them.
    if c.in_transaction:
        c.execute("ROLLBACK")
