"""The spool's footprint on disk: its database, SQLite's write-ahead log (``-wal``) and the
log's shared-memory index (``-shm``), all three held to the byte budget.

SQLite leaves two of these growing unless told otherwise: the WAL grows while checkpoints
run rarely or cannot finish (another process holding the database open for reading), and
the database file never shrinks (pages freed by deletes stay in the file, for reuse).
So the spool

- checkpoints the WAL once it holds half of ``wal_max_bytes`` (``wal_autocheckpoint``),
  truncates it back to ``wal_max_bytes`` after each checkpoint (``journal_size_limit``),
  and, should it still pass ``wal_max_bytes`` (a reader held a checkpoint off), truncates
  it to nothing with ``PRAGMA wal_checkpoint(TRUNCATE)`` after the next commit;
- caps the database's pages in use at its byte budget plus :data:`DB_SLACK_BYTES` (the
  pages of an empty spool): a put past it drops the oldest results, then metrics, until
  the pages fit, whatever their payload bytes add up to (row, index and page overheads
  make a spool's pages larger than its payloads, by half for small messages);
- runs in ``auto_vacuum=INCREMENTAL`` mode and gives free pages back to the file system
  once more than :data:`VACUUM_FREE_BYTES` (or a quarter of the budget) lie free, as after
  a backlog was delivered.

On disk a spool therefore takes at most :func:`disk_limit` bytes: budget, plus
:data:`DB_SLACK_BYTES`, plus ``wal_max_bytes``, plus :data:`SHM_SLACK_BYTES` for the
index (32 KiB per 4,096 pages of WAL). Only critical messages, which are never dropped,
can take it past that (``SpoolStats.over_budget`` then says so).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

__all__ = ["DB_SLACK_BYTES", "SHM_SLACK_BYTES", "VACUUM_FREE_BYTES", "WAL_MAX_BYTES",
           "configure", "disk_bytes", "disk_limit", "live_pages", "page_size",
           "shrink_wal", "vacuum_if_sparse"]

WAL_MAX_BYTES = 1024 * 1024
DB_SLACK_BYTES = 64 * 1024
SHM_SLACK_BYTES = 64 * 1024
VACUUM_FREE_BYTES = 1024 * 1024
_SUFFIXES = ("", "-wal", "-shm")
_INCREMENTAL = 2


def disk_limit(budget_bytes: int, wal_max_bytes: int) -> int:
    """What the spool's three files may take on disk for this budget and WAL limit."""
    return budget_bytes + DB_SLACK_BYTES + wal_max_bytes + SHM_SLACK_BYTES


def disk_bytes(path: Path) -> int:
    """The bytes of ``path``, its ``-wal`` and its ``-shm`` file (those that exist)."""
    total = 0
    for suffix in _SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def configure(db: sqlite3.Connection, wal_max_bytes: int) -> str | None:
    """Set the pragmas above on a freshly opened connection, before its schema is made.

    A database created without auto-vacuum is converted once (``VACUUM``); when that
    fails (no room for the copy it needs) the spool runs on and frees no pages: the
    reason is returned for the caller to log."""
    fresh = not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    problem = None
    if fresh:
        db.execute(f"PRAGMA auto_vacuum={_INCREMENTAL}")
    elif int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != _INCREMENTAL:
        try:
            db.execute(f"PRAGMA auto_vacuum={_INCREMENTAL}")
            db.execute("VACUUM")
        except sqlite3.Error as err:
            problem = f"cannot convert the spool to incremental vacuum: {err}"
    db.execute("PRAGMA journal_mode=WAL")
    pages = max(1, wal_max_bytes // page_size(db) // 2)
    db.execute(f"PRAGMA wal_autocheckpoint={pages}")
    db.execute(f"PRAGMA journal_size_limit={int(wal_max_bytes)}")
    return problem


def page_size(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA page_size").fetchone()[0])


def live_pages(db: sqlite3.Connection) -> int:
    """Pages of the database in use (its file's pages less the free ones)."""
    total = int(db.execute("PRAGMA page_count").fetchone()[0])
    return total - int(db.execute("PRAGMA freelist_count").fetchone()[0])


def shrink_wal(db: sqlite3.Connection, path: Path, wal_max_bytes: int) -> bool:
    """Truncate the WAL if it passed ``wal_max_bytes``. False when a reader in another
    process kept it from being truncated (it is tried again after the next commit)."""
    try:
        size = os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return True
    if size <= wal_max_bytes:
        return True
    # No waiting on the busy handler: a put must not stall behind another process.
    timeout = int(db.execute("PRAGMA busy_timeout").fetchone()[0])
    db.execute("PRAGMA busy_timeout=0")
    try:
        busy = int(db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
    finally:
        db.execute(f"PRAGMA busy_timeout={timeout}")
    return not busy


def vacuum_if_sparse(db: sqlite3.Connection, budget_bytes: int) -> int:
    """Give the free pages back to the file system when enough lie free; how many."""
    size = page_size(db)
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    if free * size <= max(VACUUM_FREE_BYTES, budget_bytes // 4):
        return 0
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != _INCREMENTAL:
        return 0
    # Each step of this pragma frees one page: only sqlite3_exec (executescript) runs it
    # to the end (the connection is in autocommit mode, so nothing is committed early).
    db.executescript("PRAGMA incremental_vacuum;")
    return free
