"""The controller's durable state, in SQLite, so a restarted controller continues.

Tables: ``rollouts`` (spec JSON, status, current step, timestamps),
``assignments`` (one row per command decided for a device: step, action, args,
``command_id``, ``rollout_seq``, sent?, acked outcome and the ack's data),
``decisions`` (an append-only log of what the controller decided and why) and
``requests`` (operator requests, ``abort``/``promote``/``resume``/``start``, written
by any process and acted on by the controller that runs on this database, which
records each one's effect).

**Write-ahead decisions.** Record a command with :meth:`ControllerState.decide`
*before* sending it, then :meth:`mark_sent`; on restart :meth:`pending_sends`
lists every decided command without an ack, to be re-sent under the **same**
``command_id`` (the device re-acks a command id it has seen). Deciding a
device's step again returns the stored command: a device never gets two
different decisions for one step (:class:`DecisionConflictError`). A retry
after a ``failed`` ack (:meth:`retry`) is the same decision at the next
attempt's ``rollout_seq`` under a new ``command_id``. Deciding a rollback
supersedes the device's unacknowledged commands of that rollout.

The database runs in WAL mode with ``synchronous=FULL``: a decision that
returned survives a crash or power loss. Timestamps are the controller's
wall clock (``clock``, injectable): a monotonic clock does not survive the
restart they are kept for, and device clocks are never used.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, cast

from agent.controller.errors import DecisionConflictError, FleetStateError
from agent.controller.plan import Action, PlannedCommand, command_seq
from agent.wire.messages import Ack

RolloutStatus = Literal["running", "paused", "succeeded", "rolled_back", "aborted"]
ROLLOUT_STATUSES = ("running", "paused", "succeeded", "rolled_back", "aborted")
SCHEMA_VERSION = 2  # 2: the ack data column and the requests table
RequestAction = Literal["abort", "promote", "resume", "start"]

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

_ASSIGNMENT_COLUMNS = ("rollout_id, thing, step_index, ordinal, attempt, action, args_json, "
                       "command_id, rollout_seq, decided_at, sent_at, send_count, outcome, "
                       "reason, acked_at, ack_data")


@dataclass(frozen=True, kw_only=True)
class RolloutRecord:
    rollout_id: str
    spec_json: str
    status: RolloutStatus
    step_index: int
    created_at: float
    updated_at: float
    step_started_at: float  # to resume a bake timer after a restart
    reason: str


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """One decided command for one device (``outcome`` None: not acknowledged yet;
    ``"superseded"``: replaced by a rollback before it was acknowledged)."""

    rollout_id: str
    thing: str
    step_index: int
    ordinal: int
    attempt: int
    action: Action
    args: Mapping[str, Any]
    command_id: str
    rollout_seq: int
    decided_at: float
    sent_at: float | None
    send_count: int
    outcome: str | None
    reason: str
    acked_at: float | None
    ack_data: Mapping[str, Any]  # the ack's ``data``: e.g. ``code``, ``model``

    @property
    def code(self) -> str:
        """The device's machine-readable reason (``on_trial``, ``label_mismatch``, ...)."""
        return str(self.ack_data.get("code") or "")

    @property
    def sent(self) -> bool:
        return self.send_count > 0

    @property
    def planned(self) -> PlannedCommand:
        """For :func:`agent.controller.plan.build_command` (pass ``command_id`` and ``attempt``)."""
        return PlannedCommand(rollout_id=self.rollout_id, thing=self.thing,
                              step_index=self.step_index, ordinal=self.ordinal,
                              action=self.action, rollout_seq=self.rollout_seq,
                              args=self.args)


@dataclass(frozen=True, kw_only=True)
class OperatorRequest:
    """An operator's request; ``handled_at`` None: the controller has not acted yet."""

    id: int
    rollout_id: str
    action: RequestAction
    payload: str  # ``start``: the spec JSON
    requested_at: float
    handled_at: float | None
    effect: str  # what the controller did, in words


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    id: int
    rollout_id: str
    at: float
    step_index: int | None
    kind: str
    detail: Mapping[str, Any]


class ControllerState:
    """One SQLite file; safe to share between the controller's threads."""

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
            with self._tx():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema', ?)",
                                     (str(SCHEMA_VERSION),))
                elif row[0] == "1":  # schema 1 lacks only the ack data column
                    self._db.execute("ALTER TABLE assignments ADD COLUMN "
                                     "ack_data TEXT NOT NULL DEFAULT '{}'")
                    self._db.execute("UPDATE meta SET value=? WHERE key='schema'",
                                     (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise FleetStateError(f"{path} holds state schema {row[0]}, "
                                          f"this controller reads {SCHEMA_VERSION}")
        except sqlite3.Error as err:
            raise FleetStateError(f"cannot open controller state {path}: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ControllerState:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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

    # ---- rollouts -----------------------------------------------------------------------

    def start_rollout(self, *, rollout_id: str, spec_json: str) -> RolloutRecord:
        """Create the rollout (status running, step 0); again with the same spec it
        returns the stored one, with another spec it refuses."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT spec_json FROM rollouts WHERE rollout_id=?",
                             (rollout_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO rollouts VALUES (?, ?, 'running', 0, ?, ?, ?, '')",
                           (rollout_id, spec_json, now, now, now))
                self._log(db, rollout_id, "started", 0, {})
            elif json.loads(row[0]) != json.loads(spec_json):
                raise FleetStateError(f"rollout {rollout_id!r} exists with another spec")
        record = self.rollout(rollout_id)
        assert record is not None
        return record

    def save_registration(self, thing: str, register: bytes) -> None:
        """Keep a device's latest Register message, so a restarted controller knows it."""
        with self._tx() as db:
            db.execute("INSERT INTO devices(thing, register) VALUES (?, ?) ON CONFLICT(thing) "
                       "DO UPDATE SET register=excluded.register", (thing, register))

    def registrations(self) -> list[bytes]:
        return [bytes(row[0]) for row in self._query("SELECT register FROM devices "
                                                     "ORDER BY thing")]

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        rows = self._query("SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,))
        return _rollout(rows[0]) if rows else None

    def rollouts(self, *, status: RolloutStatus | None = None) -> list[RolloutRecord]:
        if status is None:
            rows = self._query("SELECT * FROM rollouts ORDER BY created_at, rollout_id")
        else:
            rows = self._query("SELECT * FROM rollouts WHERE status=? "
                               "ORDER BY created_at, rollout_id", (status,))
        return [_rollout(row) for row in rows]

    def set_step(self, rollout_id: str, step_index: int) -> None:
        now = self._clock()
        with self._tx() as db:
            self._require(db, rollout_id)
            db.execute("UPDATE rollouts SET step_index=?, step_started_at=?, updated_at=? "
                       "WHERE rollout_id=?", (step_index, now, now, rollout_id))
            self._log(db, rollout_id, "step", step_index, {})

    def set_status(self, rollout_id: str, status: RolloutStatus, *, reason: str = "") -> None:
        if status not in ROLLOUT_STATUSES:
            raise FleetStateError(f"unknown rollout status {status!r}")
        with self._tx() as db:
            self._require(db, rollout_id)
            db.execute("UPDATE rollouts SET status=?, reason=?, updated_at=? WHERE rollout_id=?",
                       (status, reason, self._clock(), rollout_id))
            self._log(db, rollout_id, status, None, {"reason": reason})

    # ---- decisions ----------------------------------------------------------------------

    def decide(self, planned: PlannedCommand) -> Assignment:
        """Record ``planned`` (first try) unless that device's step already holds it;
        return the stored assignment either way (same ``command_id``)."""
        args_json = json.dumps(dict(planned.args), sort_keys=True)
        now = self._clock()
        key = (planned.rollout_id, planned.thing, planned.step_index, planned.ordinal)
        with self._tx() as db:
            self._require(db, planned.rollout_id)
            row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=?"
                             " AND thing=? AND step_index=? AND ordinal=? AND attempt=0",
                             key).fetchone()
            if row is not None:
                held = _assignment(row)
                if held.action != planned.action or dict(held.args) != json.loads(args_json):
                    raise DecisionConflictError(
                        f"{planned.thing} already has {held.action} {dict(held.args)} for "
                        f"step {planned.step_index} of {planned.rollout_id!r}; refusing "
                        f"{planned.action} {dict(planned.args)}")
                return self._latest(db, key)
            if planned.action == "rollback":
                db.execute("UPDATE assignments SET outcome='superseded', acked_at=? "
                           "WHERE rollout_id=? AND thing=? AND outcome IS NULL",
                           (now, planned.rollout_id, planned.thing))
            command_id = self._new_id()
            db.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLUMNS}) VALUES "
                       "(?, ?, ?, ?, 0, ?, ?, ?, ?, ?, NULL, 0, NULL, '', NULL, '{}')",
                       (*key, planned.action, args_json, command_id,
                        command_seq(planned.step_index, planned.ordinal), now))
            self._log(db, planned.rollout_id, "decided", planned.step_index,
                      {"thing": planned.thing, "action": planned.action,
                       "command_id": command_id})
            return self._latest(db, key)

    def retry(self, command_id: str) -> Assignment:
        """The next try of a command acked ``failed`` (or ``rejected``, e.g. by a device
        that was on another rollout's trial): same action and args, the next
        attempt's ``rollout_seq``, a new ``command_id``. Idempotent like :meth:`decide`."""
        now = self._clock()
        with self._tx() as db:
            held = self._by_command(db, command_id)
            key = (held.rollout_id, held.thing, held.step_index, held.ordinal)
            latest = self._latest(db, key)
            if latest.command_id != command_id or held.outcome not in ("failed", "rejected"):
                return latest  # already retried, or nothing to retry
            attempt = held.attempt + 1
            new_id = self._new_id()
            db.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLUMNS}) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL, '', NULL, '{}')",
                       (*key, attempt, held.action, json.dumps(dict(held.args), sort_keys=True),
                        new_id, command_seq(held.step_index, held.ordinal, attempt), now))
            self._log(db, held.rollout_id, "retry", held.step_index,
                      {"thing": held.thing, "command_id": new_id, "attempt": attempt})
            return self._latest(db, key)

    def mark_sent(self, command_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE assignments SET sent_at=?, send_count=send_count+1 "
                       "WHERE command_id=?", (self._clock(), command_id))

    def record_ack(self, ack: Ack) -> Assignment | None:
        """Store an ack's outcome (the first ack of a command wins; None for an unknown
        command, e.g. another controller's)."""
        with self._tx() as db:
            row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments "
                             "WHERE command_id=?", (ack.command_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE assignments SET outcome=?, reason=?, acked_at=?, ack_data=? "
                       "WHERE command_id=? AND outcome IS NULL",
                       (ack.outcome, ack.reason, self._clock(),
                        json.dumps(dict(getattr(ack, "data", None) or {}), sort_keys=True),
                        ack.command_id))
            return self._by_command(db, ack.command_id)

    # ---- reading ------------------------------------------------------------------------

    def pending_sends(self, rollout_id: str | None = None) -> list[Assignment]:
        """Decided, unacknowledged commands (sent or not), in the order to send them."""
        where = "outcome IS NULL" + (" AND rollout_id=?" if rollout_id else "")
        rows = self._query(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE {where} "
                           "ORDER BY rollout_id, thing, rollout_seq",
                           (rollout_id,) if rollout_id else ())
        return [_assignment(row) for row in rows]

    def decision_for(self, thing: str) -> Assignment | None:
        """The latest command decided for ``thing`` (a late device's catch-up: e.g. a
        rollback), from the rollout most recently started among those that touched it."""
        rows = self._query(
            f"SELECT {', '.join('a.' + c.strip() for c in _ASSIGNMENT_COLUMNS.split(','))} "
            "FROM assignments a JOIN rollouts r ON a.rollout_id = r.rollout_id "
            "WHERE a.thing=? ORDER BY r.created_at DESC, r.rollout_id DESC, "
            "a.rollout_seq DESC LIMIT 1", (thing,))
        return _assignment(rows[0]) if rows else None

    def assignments(self, rollout_id: str, *, step_index: int | None = None,
                    thing: str | None = None, action: Action | None = None) -> list[Assignment]:
        sql = f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=?"
        params: list[Any] = [rollout_id]
        for column, value in (("step_index", step_index), ("thing", thing), ("action", action)):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        rows = self._query(sql + " ORDER BY thing, rollout_seq", tuple(params))
        return [_assignment(row) for row in rows]

    def install_outcomes(self, rollout_id: str, step_index: int) -> dict[str, bool]:
        """Thing -> whether its stage succeeded, for the devices whose latest stage try
        of the step was acknowledged (for guardrails' ``installs``)."""
        latest: dict[str, Assignment] = {}
        for a in self.assignments(rollout_id, step_index=step_index):
            if a.action == "stage" and (a.thing not in latest
                                        or a.attempt > latest[a.thing].attempt):
                latest[a.thing] = a
        # A device that refused the stage because another rollout's model is on trial
        # there never tried to install: that is not an install failure.
        return {thing: a.outcome == "ok" for thing, a in latest.items()
                if a.outcome in ("ok", "failed", "rejected") and a.code not in NOT_TRIED}

    # ---- operator requests --------------------------------------------------------------

    def request(self, rollout_id: str, action: RequestAction, *, payload: str = "") -> int:
        """Record an operator's request for the controller to act on; its id."""
        with self._tx() as db:
            cursor = db.execute("INSERT INTO requests (rollout_id, action, payload, "
                                "requested_at) VALUES (?, ?, ?, ?)",
                                (rollout_id, action, payload, self._clock()))
            if action != "start":
                self._log(db, rollout_id, "operator", None,
                          {"action": action, "request": cursor.lastrowid})
            return int(cursor.lastrowid or 0)

    def pending_requests(self) -> list[OperatorRequest]:
        return [_request(r) for r in self._query(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE handled_at IS NULL ORDER BY id")]

    def get_request(self, request_id: int) -> OperatorRequest | None:
        rows = self._query(f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id=?",
                           (request_id,))
        return _request(rows[0]) if rows else None

    def requests(self, rollout_id: str) -> list[OperatorRequest]:
        return [_request(r) for r in self._query(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE rollout_id=? ORDER BY id",
            (rollout_id,))]

    def handle_request(self, request_id: int, effect: str) -> None:
        """Mark a request acted on, with what the controller did."""
        with self._tx() as db:
            db.execute("UPDATE requests SET handled_at=?, effect=? WHERE id=? "
                       "AND handled_at IS NULL", (self._clock(), effect[:1000], request_id))

    # ---- the controller that runs on this database ----------------------------------------

    def controller_alive(self, pid: int, *, started_at: float) -> None:
        """Written on every tick, so the operator commands can tell whether a controller
        will act on their requests."""
        value = json.dumps({"pid": pid, "started_at": started_at, "tick_at": self._clock()})
        with self._tx() as db:
            db.execute("INSERT INTO meta VALUES ('controller', ?) ON CONFLICT(key) "
                       "DO UPDATE SET value=excluded.value", (value,))

    def controller_stopped(self, pid: int) -> None:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='controller'").fetchone()
            if row is not None and json.loads(row[0]).get("pid") == pid:
                db.execute("DELETE FROM meta WHERE key='controller'")

    def controller(self) -> dict[str, Any] | None:
        """``{"pid", "started_at", "tick_at"}`` of the last controller that ticked, or None."""
        rows = self._query("SELECT value FROM meta WHERE key='controller'")
        return dict(json.loads(rows[0][0])) if rows else None

    def log(self, rollout_id: str, kind: str, *, step_index: int | None = None,
            detail: Mapping[str, Any] | None = None) -> None:
        """Append to the decisions log (verdicts, pauses, operator actions)."""
        with self._tx() as db:
            self._log(db, rollout_id, kind, step_index, dict(detail or {}))

    def decisions(self, rollout_id: str) -> list[DecisionRecord]:
        rows = self._query("SELECT id, rollout_id, at, step_index, kind, detail_json "
                           "FROM decisions WHERE rollout_id=? ORDER BY id", (rollout_id,))
        return [DecisionRecord(id=r[0], rollout_id=r[1], at=r[2], step_index=r[3], kind=r[4],
                               detail=MappingProxyType(json.loads(r[5]))) for r in rows]

    def last_decision(self, rollout_id: str, kind: str, *,
                      step_index: int | None = None) -> DecisionRecord | None:
        """The newest decision of ``kind`` (of one step), without reading the whole log."""
        sql = ("SELECT id, rollout_id, at, step_index, kind, detail_json FROM decisions "
               "WHERE rollout_id=? AND kind=?")
        params: tuple[Any, ...] = (rollout_id, kind)
        if step_index is not None:
            sql += " AND step_index=?"
            params += (step_index,)
        rows = self._query(sql + " ORDER BY id DESC LIMIT 1", params)
        if not rows:
            return None
        r = rows[0]
        return DecisionRecord(id=r[0], rollout_id=r[1], at=r[2], step_index=r[3], kind=r[4],
                              detail=MappingProxyType(json.loads(r[5])))

    # ---- helpers ------------------------------------------------------------------------

    def _log(self, db: sqlite3.Connection, rollout_id: str, kind: str, step_index: int | None,
             detail: Mapping[str, Any]) -> None:
        db.execute("INSERT INTO decisions (rollout_id, at, step_index, kind, detail_json) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (rollout_id, self._clock(), step_index, kind,
                    json.dumps(dict(detail), sort_keys=True, default=str)))

    @staticmethod
    def _require(db: sqlite3.Connection, rollout_id: str) -> None:
        if db.execute("SELECT 1 FROM rollouts WHERE rollout_id=?",
                      (rollout_id,)).fetchone() is None:
            raise FleetStateError(f"unknown rollout {rollout_id!r}")

    @staticmethod
    def _latest(db: sqlite3.Connection, key: tuple[str, str, int, int]) -> Assignment:
        row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=? "
                         "AND thing=? AND step_index=? AND ordinal=? "
                         "ORDER BY attempt DESC LIMIT 1", key).fetchone()
        return _assignment(row)

    @staticmethod
    def _by_command(db: sqlite3.Connection, command_id: str) -> Assignment:
        row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE command_id=?",
                         (command_id,)).fetchone()
        if row is None:
            raise FleetStateError(f"unknown command {command_id!r}")
        return _assignment(row)


_REQUEST_COLUMNS = "id, rollout_id, action, payload, requested_at, handled_at, effect"
# Ack codes of a stage the device refused without trying to install anything.
NOT_TRIED = ("on_trial",)


def _request(row: tuple[Any, ...]) -> OperatorRequest:
    return OperatorRequest(id=row[0], rollout_id=row[1], action=cast(RequestAction, row[2]),
                           payload=row[3], requested_at=row[4], handled_at=row[5],
                           effect=row[6])


def _rollout(row: tuple[Any, ...]) -> RolloutRecord:
    return RolloutRecord(rollout_id=row[0], spec_json=row[1],
                         status=cast(RolloutStatus, row[2]), step_index=row[3],
                         created_at=row[4], updated_at=row[5], step_started_at=row[6],
                         reason=row[7])


def _assignment(row: tuple[Any, ...]) -> Assignment:
    return Assignment(rollout_id=row[0], thing=row[1], step_index=row[2], ordinal=row[3],
                      attempt=row[4], action=cast(Action, row[5]),
                      args=MappingProxyType(json.loads(row[6])), command_id=row[7],
                      rollout_seq=row[8], decided_at=row[9], sent_at=row[10],
                      send_count=row[11], outcome=row[12], reason=row[13], acked_at=row[14],
                      ack_data=MappingProxyType(json.loads(row[15] or "{}")))
