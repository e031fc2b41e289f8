"""The rows of the controller's database, as read back: rollouts, assignments,
operator requests and decisions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, cast

from agent.controller.plan import Action, PlannedCommand

RolloutStatus = Literal["running", "paused", "succeeded", "rolled_back", "aborted"]
ROLLOUT_STATUSES = ("running", "paused", "succeeded", "rolled_back", "aborted")
TERMINAL = ("succeeded", "rolled_back", "aborted")  # the statuses a rollout never leaves
RequestAction = Literal["abort", "promote", "resume", "start"]
# Ack codes of a stage the device refused without trying to install anything.
NOT_TRIED = ("on_trial",)

ASSIGNMENT_COLUMNS = ("rollout_id, thing, step_index, ordinal, attempt, action, args_json, "
                      "command_id, rollout_seq, decided_at, sent_at, send_count, outcome, "
                      "reason, acked_at, ack_data")
REQUEST_COLUMNS = "id, rollout_id, action, payload, requested_at, handled_at, effect"
DECISION_COLUMNS = "id, rollout_id, at, step_index, kind, detail_json"


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


def request_from_row(row: tuple[Any, ...]) -> OperatorRequest:
    """An :class:`OperatorRequest` from a row of :data:`REQUEST_COLUMNS`."""
    return OperatorRequest(id=row[0], rollout_id=row[1], action=cast(RequestAction, row[2]),
                           payload=row[3], requested_at=row[4], handled_at=row[5],
                           effect=row[6])


def rollout_from_row(row: tuple[Any, ...]) -> RolloutRecord:
    """A :class:`RolloutRecord` from a whole ``rollouts`` row."""
    return RolloutRecord(rollout_id=row[0], spec_json=row[1],
                         status=cast(RolloutStatus, row[2]), step_index=row[3],
                         created_at=row[4], updated_at=row[5], step_started_at=row[6],
                         reason=row[7])


def assignment_from_row(row: tuple[Any, ...]) -> Assignment:
    """An :class:`Assignment` from a row of :data:`ASSIGNMENT_COLUMNS`."""
    return Assignment(rollout_id=row[0], thing=row[1], step_index=row[2], ordinal=row[3],
                      attempt=row[4], action=cast(Action, row[5]),
                      args=MappingProxyType(json.loads(row[6])), command_id=row[7],
                      rollout_seq=row[8], decided_at=row[9], sent_at=row[10],
                      send_count=row[11], outcome=row[12], reason=row[13], acked_at=row[14],
                      ack_data=MappingProxyType(json.loads(row[15] or "{}")))


def decision_from_row(row: tuple[Any, ...]) -> DecisionRecord:
    """A :class:`DecisionRecord` from a row of :data:`DECISION_COLUMNS`."""
    return DecisionRecord(id=row[0], rollout_id=row[1], at=row[2], step_index=row[3],
                          kind=row[4], detail=MappingProxyType(json.loads(row[5])))
