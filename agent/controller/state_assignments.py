"""The ``assignments`` table: one row per command decided for a device.

**Write-ahead decisions.** Record a command with :meth:`AssignmentsTable.decide`
*before* sending it, then :meth:`~AssignmentsTable.mark_sent`; on restart
:meth:`~AssignmentsTable.pending_sends` lists every decided command without an
ack, to be re-sent under the **same** ``command_id`` (the device re-acks a
command id it has seen). Deciding a device's step again returns the stored
command: a device never gets two different decisions for one step
(:class:`DecisionConflictError`). A retry after a ``failed`` ack
(:meth:`~AssignmentsTable.retry`) is the same decision at the next attempt's
``rollout_seq`` under a new ``command_id``. Deciding a rollback supersedes the
device's unacknowledged commands of that rollout.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from agent.controller.errors import DecisionConflictError, FleetStateError
from agent.controller.plan import Action, PlannedCommand, command_seq
from agent.controller.state_db import StateDatabase
from agent.controller.state_records import (
    ASSIGNMENT_COLUMNS,
    NOT_TRIED,
    Assignment,
    assignment_from_row,
)
from agent.wire.messages import Ack


class AssignmentsTable(StateDatabase):
    """Deciding, sending and acknowledging commands, and reading them back."""

    def decide(self, planned: PlannedCommand) -> Assignment:
        """Record ``planned`` (first try) unless that device's step already holds it;
        return the stored assignment either way (same ``command_id``)."""
        args_json = json.dumps(dict(planned.args), sort_keys=True)
        now = self._clock()
        key = (planned.rollout_id, planned.thing, planned.step_index, planned.ordinal)
        with self._tx() as db:
            self._require(db, planned.rollout_id)
            row = db.execute(f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=?"
                             " AND thing=? AND step_index=? AND ordinal=? AND attempt=0",
                             key).fetchone()
            if row is not None:
                held = assignment_from_row(row)
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
            db.execute(f"INSERT INTO assignments ({ASSIGNMENT_COLUMNS}) VALUES "
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
            db.execute(f"INSERT INTO assignments ({ASSIGNMENT_COLUMNS}) VALUES "
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
            row = db.execute(f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments "
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
        rows = self._query(f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE {where} "
                           "ORDER BY rollout_id, thing, rollout_seq",
                           (rollout_id,) if rollout_id else ())
        return [assignment_from_row(row) for row in rows]

    def decision_for(self, thing: str) -> Assignment | None:
        """The latest command decided for ``thing`` (a late device's catch-up: e.g. a
        rollback), from the rollout most recently started among those that touched it."""
        rows = self._query(
            f"SELECT {', '.join('a.' + c.strip() for c in ASSIGNMENT_COLUMNS.split(','))} "
            "FROM assignments a JOIN rollouts r ON a.rollout_id = r.rollout_id "
            "WHERE a.thing=? ORDER BY r.created_at DESC, r.rollout_id DESC, "
            "a.rollout_seq DESC LIMIT 1", (thing,))
        return assignment_from_row(rows[0]) if rows else None

    def assignments(self, rollout_id: str, *, step_index: int | None = None,
                    thing: str | None = None, action: Action | None = None) -> list[Assignment]:
        sql = f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=?"
        params: list[Any] = [rollout_id]
        for column, value in (("step_index", step_index), ("thing", thing), ("action", action)):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        rows = self._query(sql + " ORDER BY thing, rollout_seq", tuple(params))
        return [assignment_from_row(row) for row in rows]

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

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _latest(db: sqlite3.Connection, key: tuple[str, str, int, int]) -> Assignment:
        row = db.execute(f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE rollout_id=? "
                         "AND thing=? AND step_index=? AND ordinal=? "
                         "ORDER BY attempt DESC LIMIT 1", key).fetchone()
        return assignment_from_row(row)

    @staticmethod
    def _by_command(db: sqlite3.Connection, command_id: str) -> Assignment:
        row = db.execute(f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE command_id=?",
                         (command_id,)).fetchone()
        if row is None:
            raise FleetStateError(f"unknown command {command_id!r}")
        return assignment_from_row(row)
