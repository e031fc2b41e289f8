"""A durable store-and-forward spool on SQLite, in front of every transport.

One row per message; the autoincrement id is the delivery order. The spool is
bounded by a byte budget (payload plus topic bytes): when a put takes it over
budget, the oldest *results* (prediction results, their own class) are dropped
first, then the oldest *metrics*, until it fits again, each counted; a
*critical* message (ack, state, register, event, heartbeat) is never dropped. If
critical messages alone exceed the budget they are all kept and
:attr:`SpoolStats.over_budget` says so. Results also have a cap of their own
(``results_budget_bytes``): past it their oldest go, whatever room is left, so a
stream of results never takes the room of anything else.

Durability: the database runs in WAL mode. A put (and the budget trim that goes
with it) commits with ``synchronous=FULL``, which fsyncs the WAL before
``put()`` returns, so a returned put survives SIGKILL *and* power loss (SIGKILL
alone needs only the write(2) into the page cache; a Raspberry Pi pulled from
the wall needs the fsync). Acks commit with ``synchronous=NORMAL``: no fsync,
because losing an ack to a power cut costs one duplicate delivery, which
at-least-once delivery allows; the WAL is sequential, so the next FULL commit
makes earlier acks durable too. An fsync per put is affordable: the agent puts a
metrics report every few seconds, not thousands. Results commit with ``NORMAL`` too:
they come several a second, and a power cut may cost the last few of them.

A full disk (``SQLITE_FULL``, which SQLite also returns for ENOSPC) raises
:class:`SpoolFullError`; the transaction is rolled back, the file stays
consistent, and puts succeed again once space is freed (acks free pages for
reuse). The record types and errors live in :mod:`agent.device.uplink.spool_types`.
The budget holds on disk too, WAL included (:mod:`agent.device.uplink.spool_disk`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.device.uplink import spool_disk
from agent.device.uplink.spool_types import (
    Priority,
    SpoolConfig,
    SpoolEntry,
    SpoolError,
    SpoolFullError,
    SpoolStats,
)

__all__ = ["Priority", "Spool", "SpoolConfig", "SpoolEntry", "SpoolError", "SpoolFullError",
           "SpoolStats"]

log = logging.getLogger(__name__)

_SQLITE_FULL = 13
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    priority TEXT NOT NULL,
    size INTEGER NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_priority ON messages (priority, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped_metrics', 0);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped_results', 0);
"""


class Spool:
    """The spool file at ``path``; thread-safe (one connection behind a lock). Its WAL is
    kept under ``wal_max_bytes``; :attr:`disk_limit_bytes` is what its files may take."""

    def __init__(self, *, path: Path, budget_bytes: int = 16 * 1024 * 1024,
                 max_db_bytes: int | None = None,
                 results_budget_bytes: int | None = None,
                 wal_max_bytes: int = spool_disk.WAL_MAX_BYTES) -> None:
        if min(budget_bytes, wal_max_bytes, 1 if results_budget_bytes is None
               else results_budget_bytes) <= 0:
            raise ValueError("budget_bytes, wal_max_bytes, results_budget_bytes: positive")
        self.path = path
        self.budget_bytes = budget_bytes
        self.results_budget_bytes = results_budget_bytes
        self.wal_max_bytes = wal_max_bytes
        self._last_wal_warning = -60.0
        self._lock = threading.Lock()
        self._has_entries = threading.Condition(self._lock)
        self._synchronous = ""
        self._last_budget_warning = -60.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            problem = spool_disk.configure(self._db, wal_max_bytes)
            self._db.executescript(_SCHEMA)
            self._page_size = spool_disk.page_size(self._db)
            rows = self._db.execute(
                "SELECT priority, COUNT(*), COALESCE(SUM(size), 0) FROM messages "
                "GROUP BY priority").fetchall()
        except sqlite3.Error as err:
            raise _translate(err, f"cannot open spool {path}") from err
        if problem:
            log.warning("spool %s: %s", path, problem)
        self._page_limit = -(-(budget_bytes + spool_disk.DB_SLACK_BYTES) // self._page_size)
        sizes: dict[Priority, tuple[int, int]] = {
            Priority(p): (int(n), int(total)) for p, n, total in rows}
        self._count = sum(n for n, _ in sizes.values())
        self._bytes = {p: sizes.get(p, (0, 0))[1] for p in Priority}
        self._default_max_pages = int(self._db.execute("PRAGMA max_page_count").fetchone()[0])
        self.set_max_db_bytes(max_db_bytes)

    @classmethod
    def from_config(cls, config: SpoolConfig) -> Spool:
        return cls(path=config.path, budget_bytes=config.budget_bytes,
                   max_db_bytes=config.max_db_bytes,
                   results_budget_bytes=config.results_budget_bytes,
                   wal_max_bytes=config.wal_max_bytes)

    def set_max_db_bytes(self, max_db_bytes: int | None) -> None:
        """Cap the database file (None: no cap beyond the disk). Past the cap puts raise
        SpoolFullError exactly as on a full disk."""
        with self._lock:
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = -(-max_db_bytes // page_size) if max_db_bytes else self._default_max_pages
            self._db.execute(f"PRAGMA max_page_count={int(pages)}")

    @contextmanager
    def _transaction(self, synchronous: str, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT under the lock; rolls back and translates on error."""
        if self._synchronous != synchronous:
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("spool rollback failed")
            raise _translate(err, f"spool {what} failed") from err

    def put(self, topic: str, payload: bytes, *, qos: int = 1,
            priority: Priority = Priority.CRITICAL) -> int | None:
        """Store a message; durable when this returns (results: see the module's notes).
        Returns its id, or None when it was a metrics message or a result that could not
        fit even after dropping every older one of its kind."""
        size = len(payload) + len(topic.encode())
        with self._lock:
            synchronous = "NORMAL" if priority is Priority.RESULTS else "FULL"
            with self._transaction(synchronous, "put") as db:
                cursor = db.execute(
                    "INSERT INTO messages (topic, payload, qos, priority, size, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (topic, payload, qos, priority.value, size, time.time()))
                new_id = cursor.lastrowid
                results = self._bytes[Priority.RESULTS] + (
                    size if priority is Priority.RESULTS else 0)
                cap = self.results_budget_bytes
                trimmed = self._trim(db, self.total_bytes + size,
                                     results - cap if cap is not None else 0)
                self._fit_pages(db, trimmed)
            self._shrink_wal()
            self._bytes[priority] += size
            self._count += 1
            last_dropped = None
            for kind, (dropped, freed, last_id) in trimmed.items():
                self._count -= dropped
                self._bytes[kind] -= freed
                if kind is priority:
                    last_dropped = last_id
            if trimmed or self.total_bytes > self.budget_bytes:
                self._warn_over_budget()
            self._has_entries.notify_all()
        if new_id is None or (last_dropped is not None and last_dropped >= new_id):
            return None
        return new_id

    def _warn_over_budget(self) -> None:
        # Once a minute at most: a long outage drops a metric on every put.
        now = time.monotonic()
        if now - self._last_budget_warning < 60.0:
            return
        self._last_budget_warning = now
        if self.total_bytes > self.budget_bytes:
            log.warning("critical messages alone exceed the spool budget (%d > %d bytes)",
                        self.total_bytes, self.budget_bytes)
        else:
            log.warning("spool at its %d-byte budget (results %s): dropping the oldest "
                        "results, then metrics", self.budget_bytes, self.results_budget_bytes)

    def _trim(self, db: sqlite3.Connection, total: int,
              results_excess: int) -> dict[Priority, tuple[int, int, int | None]]:
        """Drop the oldest results until they fit their own cap (``results_excess`` bytes
        over it) and, with metrics after them, until ``total`` fits the budget. Returns,
        per kind that lost any, (count dropped, bytes freed, id of the last one dropped)."""
        excess = total - self.budget_bytes
        found: dict[Priority, tuple[int, int, int | None]] = {}
        for kind in (Priority.RESULTS, Priority.METRICS):
            need = max(excess, results_excess) if kind is Priority.RESULTS else excess
            if need <= 0:
                continue
            dropped, freed, last_id = self._drop_oldest(db, kind, need)
            if dropped:
                found[kind] = (dropped, freed, last_id)
            excess -= freed
        return found

    def _fit_pages(self, db: sqlite3.Connection,
                   found: dict[Priority, tuple[int, int, int | None]]) -> None:
        """Drop the oldest results, then metrics, until the database's pages in use fit the
        budget (plus its slack); adds what went to ``found``."""
        for _ in range(32):
            excess = spool_disk.live_pages(db) - self._page_limit
            if excess <= 0:
                return
            need, progress = excess * self._page_size, False
            for kind in (Priority.RESULTS, Priority.METRICS):
                dropped, freed, last_id = self._drop_oldest(db, kind, need)
                if dropped:
                    before = found.get(kind, (0, 0, None))
                    found[kind] = (before[0] + dropped, before[1] + freed, last_id)
                    progress, need = True, need - freed
                if need <= 0:
                    break
            if not progress:
                return  # critical messages alone: kept, over budget

    def _shrink_wal(self) -> None:
        # After a commit, under the lock: the put has already succeeded.
        try:
            if spool_disk.shrink_wal(self._db, self.path, self.wal_max_bytes):
                return
            problem = "another process holds the spool open for reading"
        except sqlite3.Error as err:
            problem = str(err)
        if time.monotonic() - self._last_wal_warning >= 60.0:
            self._last_wal_warning = time.monotonic()
            log.warning("spool %s: its WAL passed %d bytes and cannot be truncated yet: %s",
                        self.path, self.wal_max_bytes, problem)

    def disk_bytes(self) -> int:
        """What the spool's database, WAL and WAL index take on disk now."""
        return spool_disk.disk_bytes(self.path)

    @property
    def disk_limit_bytes(self) -> int:
        """The most :meth:`disk_bytes` reaches while critical messages fit the budget."""
        return spool_disk.disk_limit(self.budget_bytes, self.wal_max_bytes)

    @staticmethod
    def _drop_oldest(db: sqlite3.Connection, kind: Priority,
                     need: int) -> tuple[int, int, int | None]:
        dropped = freed = 0
        last_id: int | None = None
        for row_id, row_size in db.execute(
                "SELECT id, size FROM messages WHERE priority = ? ORDER BY id", (kind.value,)):
            dropped, freed, last_id = dropped + 1, freed + row_size, row_id
            if freed >= need:
                break
        if last_id is not None:
            db.execute("DELETE FROM messages WHERE priority = ? AND id <= ?",
                       (kind.value, last_id))
            db.execute("UPDATE counters SET value = value + ? WHERE name = ?",
                       (dropped, f"dropped_{kind.value}"))
        return dropped, freed, last_id

    def peek(self, limit: int = 100, *, after_id: int = 0) -> list[SpoolEntry]:
        """Up to ``limit`` oldest entries with an id above ``after_id``, in delivery order."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload, qos, priority, size, enqueued_at FROM messages "
                    "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
            except sqlite3.Error as err:
                raise _translate(err, "spool peek failed") from err
        return [SpoolEntry(id=r[0], topic=r[1], payload=bytes(r[2]), qos=r[3],
                           priority=Priority(r[4]), size=r[5], enqueued_at=r[6]) for r in rows]

    def ack(self, entry_id: int) -> None:
        """Delete a delivered entry (a no-op if the budget already dropped it)."""
        self.ack_many((entry_id,))

    def ack_many(self, entry_ids: Iterable[int]) -> None:
        ids = list(entry_ids)
        if not ids:
            return
        removed: list[tuple[str, int]] = []
        with self._lock:
            with self._transaction("NORMAL", "ack") as db:
                # Chunks stay under old SQLite's 999-parameter limit; no RETURNING, which
                # the SQLite of Ubuntu 20.04 (JetPack 5) lacks.
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    removed += db.execute(
                        f"SELECT priority, size FROM messages WHERE id IN ({marks})",
                        chunk).fetchall()
                    db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
            for priority, size in removed:
                self._bytes[Priority(priority)] -= size
            self._count -= len(removed)
            try:
                spool_disk.vacuum_if_sparse(self._db, self.budget_bytes)
            except sqlite3.Error as err:  # the acks stand; the pages are freed next time
                log.warning("spool %s: cannot free pages: %s", self.path, err)
            self._shrink_wal()

    @property
    def total_bytes(self) -> int:
        return sum(self._bytes.values())

    def count(self) -> int:
        with self._lock:
            return self._count

    def dropped_metrics(self) -> int:
        """Metrics dropped for the budget since the count was last taken (persistent)."""
        return self._counter("dropped_metrics")

    def dropped_results(self) -> int:
        """Results dropped for the budget or their cap, ever (persistent)."""
        return self._counter("dropped_results")

    def _counter(self, name: str) -> int:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            except sqlite3.Error as err:
                raise _translate(err, "spool read failed") from err
            return int(row[0])

    def take_dropped_metrics(self) -> int:
        """Read and reset the dropped-metrics count in one transaction."""
        with self._lock, self._transaction("FULL", "counter reset") as db:
            row = db.execute("SELECT value FROM counters WHERE name = 'dropped_metrics'")
            value = int(row.fetchone()[0])
            db.execute("UPDATE counters SET value = 0 WHERE name = 'dropped_metrics'")
            return value

    def report_dropped_metrics(self, *, topic: str, encode: Callable[[int], bytes]) -> int:
        """Turn the dropped-metrics count into a critical message on ``topic`` and reset
        the count, atomically: a crash never loses the count nor reports it twice.
        Returns the count (0: nothing was enqueued)."""
        with self._lock:
            with self._transaction("FULL", "dropped-metrics report") as db:
                row = db.execute("SELECT value FROM counters WHERE name = 'dropped_metrics'")
                value = int(row.fetchone()[0])
                size = 0
                if value:
                    payload = encode(value)
                    size = len(payload) + len(topic.encode())
                    db.execute(
                        "INSERT INTO messages (topic, payload, qos, priority, size, enqueued_at)"
                        " VALUES (?, ?, 1, ?, ?, ?)",
                        (topic, payload, Priority.CRITICAL.value, size, time.time()))
                    db.execute("UPDATE counters SET value = 0 WHERE name = 'dropped_metrics'")
            if value:
                self._count += 1
                self._bytes[Priority.CRITICAL] += size
                self._has_entries.notify_all()
            return value

    def stats(self) -> SpoolStats:
        dropped, dropped_results = self.dropped_metrics(), self.dropped_results()
        with self._lock:
            return SpoolStats(
                count=self._count, bytes=self.total_bytes,
                critical_bytes=self._bytes[Priority.CRITICAL],
                metrics_bytes=self._bytes[Priority.METRICS],
                budget_bytes=self.budget_bytes, dropped_metrics=dropped,
                results_bytes=self._bytes[Priority.RESULTS], dropped_results=dropped_results)

    def wait_for_entries(self, timeout_s: float) -> bool:
        """Block until the spool holds something (or the timeout); True if it does."""
        with self._has_entries:
            return self._has_entries.wait_for(lambda: self._count > 0, timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _translate(err: sqlite3.Error, what: str) -> SpoolError:
    code = getattr(err, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(err):
        return SpoolFullError(f"{what}: no space left ({err})")
    return SpoolError(f"{what}: {err}")
