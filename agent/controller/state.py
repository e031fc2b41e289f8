"""The controller's durable state, in SQLite, so a restarted controller continues.

Tables: ``rollouts`` (spec JSON, status, current step, timestamps),
``assignments`` (one row per command decided for a device: step, action, args,
``command_id``, ``rollout_seq``, sent?, acked outcome and the ack's data:
:mod:`agent.controller.state_assignments`), ``decisions`` (an append-only log of
what the controller decided and why), ``requests`` (operator requests, written by
any process and acted on by the controller that runs on this database:
:mod:`agent.controller.state_requests`) and ``devices`` (the latest registration
of each device).

**Write-ahead decisions.** Record a command with :meth:`ControllerState.decide`
*before* sending it, then :meth:`mark_sent`; on restart :meth:`pending_sends`
lists every decided command without an ack, to be re-sent under the **same**
``command_id``.

The database runs in WAL mode with ``synchronous=FULL``: a decision that
returned survives a crash or power loss (:mod:`agent.controller.state_db`).
Timestamps are the controller's wall clock (``clock``, injectable): a monotonic
clock does not survive the restart they are kept for, and device clocks are never
used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from agent.controller.errors import FleetStateError
from agent.controller.state_assignments import AssignmentsTable
from agent.controller.state_db import SCHEMA_VERSION
from agent.controller.state_records import (
    DECISION_COLUMNS,
    NOT_TRIED,
    ROLLOUT_STATUSES,
    TERMINAL,
    Assignment,
    DecisionRecord,
    OperatorRequest,
    RequestAction,
    RolloutRecord,
    RolloutStatus,
    decision_from_row,
    rollout_from_row,
)
from agent.controller.state_requests import OperatorRequestsTable

__all__ = [
    "NOT_TRIED", "ROLLOUT_STATUSES", "SCHEMA_VERSION", "TERMINAL", "Assignment",
    "ControllerState", "DecisionRecord", "OperatorRequest", "RequestAction", "RolloutRecord",
    "RolloutStatus",
]


class ControllerState(AssignmentsTable, OperatorRequestsTable):
    """One SQLite file; safe to share between the controller's threads."""

    def __enter__(self) -> ControllerState:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        rows = self._query("SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,))
        return rollout_from_row(rows[0]) if rows else None

    def rollouts(self, *, status: RolloutStatus | None = None) -> list[RolloutRecord]:
        if status is None:
            rows = self._query("SELECT * FROM rollouts ORDER BY created_at, rollout_id")
        else:
            rows = self._query("SELECT * FROM rollouts WHERE status=? "
                               "ORDER BY created_at, rollout_id", (status,))
        return [rollout_from_row(row) for row in rows]

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

    # ---- devices ------------------------------------------------------------------------

    def save_registration(self, thing: str, register: bytes) -> None:
        """Keep a device's latest Register message, so a restarted controller knows it."""
        with self._tx() as db:
            db.execute("INSERT INTO devices(thing, register) VALUES (?, ?) ON CONFLICT(thing) "
                       "DO UPDATE SET register=excluded.register", (thing, register))

    def registrations(self) -> list[bytes]:
        return [bytes(row[0]) for row in self._query("SELECT register FROM devices "
                                                     "ORDER BY thing")]

    # ---- the decisions log --------------------------------------------------------------

    def log(self, rollout_id: str, kind: str, *, step_index: int | None = None,
            detail: Mapping[str, Any] | None = None) -> None:
        """Append to the decisions log (verdicts, pauses, operator actions)."""
        with self._tx() as db:
            self._log(db, rollout_id, kind, step_index, dict(detail or {}))

    def decisions(self, rollout_id: str) -> list[DecisionRecord]:
        rows = self._query(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE rollout_id=? "
                           "ORDER BY id", (rollout_id,))
        return [decision_from_row(r) for r in rows]

    def last_decision(self, rollout_id: str, kind: str, *,
                      step_index: int | None = None) -> DecisionRecord | None:
        """The newest decision of ``kind`` (of one step), without reading the whole log."""
        sql = f"SELECT {DECISION_COLUMNS} FROM decisions WHERE rollout_id=? AND kind=?"
        params: tuple[Any, ...] = (rollout_id, kind)
        if step_index is not None:
            sql += " AND step_index=?"
            params += (step_index,)
        rows = self._query(sql + " ORDER BY id DESC LIMIT 1", params)
        return decision_from_row(rows[0]) if rows else None
