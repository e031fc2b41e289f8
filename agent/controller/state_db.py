"""The controller's SQLite database: its schema, the migration from older schemas, and
the connection every table of :class:`~agent.controller.state.ControllerState` works on.

The database runs in WAL mode with ``synchronous=FULL``: a transaction that
returned survives a crash or power loss. Every write is one ``BEGIN IMMEDIATE``
transaction; every failure of SQLite is a :class:`FleetStateError`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.controller.errors import FleetStateError

SCHEMA_VERSION = 2  # 2: the ack data column and the requests table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (thing TEXT PRIMARY KEY, register BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    step_started_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS assignments (
    rollout_id TEXT NOT NULL REFERENCES rollouts(rollout_id),
    thing TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    action TEXT NOT NULL,
    args_json TEXT NOT NULL,
    command_id TEXT NOT NULL UNIQUE,
    rollout_seq INTEGER NOT NULL,
    decided_at REAL NOT NULL,
    sent_at REAL,
    send_count INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    reason TEXT NOT NULL DEFAULT '',
    acked_at REAL,
    ack_data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (rollout_id, thing, step_index, ordinal, attempt),
    UNIQUE (rollout_id, thing, rollout_seq)
);
CREATE INDEX IF NOT EXISTS assignments_thing ON assignments (thing, decided_at);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    at REAL NOT NULL,
    step_index INTEGER,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_kind ON decisions (rollout_id, kind, id);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '',
    requested_at REAL NOT NULL,
    handled_at REAL,
    effect TEXT NOT NULL DEFAULT ''
);
"""


def _create_or_migrate(db: sqlite3.Connection, path: str | Path) -> None:
    """Create what is missing and bring an older schema up to :data:`SCHEMA_VERSION`
    (inside the caller's transaction)."""
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif row[0] == "1":  # schema 1 lacks only the ack data column
        db.execute("ALTER TABLE assignments ADD COLUMN ack_data TEXT NOT NULL DEFAULT '{}'")
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
    elif row[0] != str(SCHEMA_VERSION):
        raise FleetStateError(f"{path} holds state schema {row[0]}, "
                              f"this controller reads {SCHEMA_VERSION}")


class StateDatabase:
    """One SQLite file, opened (and migrated) at construction; safe to share between
    threads. The tables' methods build on :meth:`_tx`, :meth:`_query` and :meth:`_log`."""

    def __init__(self, *, path: str | Path, clock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self._clock, self._new_id = clock, new_id
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._tx() as db:
                _create_or_migrate(db, path)
        except sqlite3.Error as err:
            raise FleetStateError(f"cannot open controller state {path}: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                raise FleetStateError(f"controller state: {err}") from err

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise FleetStateError(f"controller state: {err}") from err

    def _log(self, db: sqlite3.Connection, rollout_id: str, kind: str, step_index: int | None,
             detail: Mapping[str, Any]) -> None:
        """Append to the decisions log, inside the transaction ``db``."""
        db.execute("INSERT INTO decisions (rollout_id, at, step_index, kind, detail_json) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (rollout_id, self._clock(), step_index, kind,
                    json.dumps(dict(detail), sort_keys=True, default=str)))

    @staticmethod
    def _require(db: sqlite3.Connection, rollout_id: str) -> None:
        if db.execute("SELECT 1 FROM rollouts WHERE rollout_id=?",
                      (rollout_id,)).fetchone() is None:
            raise FleetStateError(f"unknown rollout {rollout_id!r}")
