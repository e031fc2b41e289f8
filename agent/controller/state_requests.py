"""The control plane between operator commands and the controller, in its database:
the ``requests`` table (``abort``, ``promote``, ``resume``, ``start``, written by
any process, acted on by the controller that runs on the database, which records
each one's effect) and the liveness row of that controller."""

from __future__ import annotations

import json
from typing import Any

from agent.controller.state_db import StateDatabase
from agent.controller.state_records import (
    REQUEST_COLUMNS,
    OperatorRequest,
    RequestAction,
    request_from_row,
)


class OperatorRequestsTable(StateDatabase):
    """Operator requests, and which controller (if any) will act on them."""

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
        return [request_from_row(r) for r in self._query(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE handled_at IS NULL ORDER BY id")]

    def get_request(self, request_id: int) -> OperatorRequest | None:
        rows = self._query(f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id=?",
                           (request_id,))
        return request_from_row(rows[0]) if rows else None

    def requests(self, rollout_id: str) -> list[OperatorRequest]:
        return [request_from_row(r) for r in self._query(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE rollout_id=? ORDER BY id",
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
