"""Durable controller state: survives reopen, resumes sends, never two decisions per step."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from agent.controller.errors import DecisionConflictError, FleetStateError
from agent.controller.plan import PlannedCommand, build_command, command_seq
from agent.controller.state import ControllerState
from agent.wire.messages import Ack

RID = "r-1"
SPEC = json.dumps({"name": RID, "model": "digits-v2"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def planned(thing: str, step: int, ordinal: int, action: str = "promote",
            **args: str | int | float) -> PlannedCommand:
    return PlannedCommand(rollout_id=RID, thing=thing, step_index=step, ordinal=ordinal,
                          action=action, rollout_seq=command_seq(step, ordinal),  # type: ignore[arg-type]
                          args=MappingProxyType(dict(args)))


def ack(command_id: str, seq: int, outcome: str = "ok", thing: str = "pi-1") -> Ack:
    return Ack(thing=thing, seq=seq, sent_at=0, command_id=command_id, rollout_id=RID,
               rollout_seq=1000, outcome=outcome)  # type: ignore[arg-type]


def open_state(path: Path) -> ControllerState:
    return ControllerState(path=path, clock=Clock())


def test_rollout_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    with open_state(db) as state:
        first = state.start_rollout(rollout_id=RID, spec_json=SPEC)
        assert first.status == "running" and first.step_index == 0
        assert state.start_rollout(rollout_id=RID, spec_json=SPEC) == first  # idempotent
        with pytest.raises(FleetStateError, match="another spec"):
            state.start_rollout(rollout_id=RID, spec_json=json.dumps({"name": "other"}))
        state.set_step(RID, 2)
        state.set_status(RID, "paused", reason="operator")
        state.log(RID, "verdict", step_index=2, detail={"status": "insufficient"})
    with open_state(db) as state:
        record = state.rollout(RID)
        assert record is not None
        assert (record.status, record.step_index, record.reason) == ("paused", 2, "operator")
        assert json.loads(record.spec_json) == json.loads(SPEC)
        assert [r.rollout_id for r in state.rollouts(status="paused")] == [RID]
        assert [d.kind for d in state.decisions(RID)] == ["started", "step", "paused", "verdict"]
        assert state.decisions(RID)[-1].detail == {"status": "insufficient"}
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_same_step_same_command_and_conflicts_refused(tmp_path: Path) -> None:
    with open_state(tmp_path / "c.db") as state:
        state.start_rollout(rollout_id=RID, spec_json=SPEC)
        one = state.decide(planned("pi-1", 1, 0, "set_weights", blue=90, green=10))
        again = state.decide(planned("pi-1", 1, 0, "set_weights", blue=90, green=10))
        assert again.command_id == one.command_id and again.rollout_seq == command_seq(1, 0)
        with pytest.raises(DecisionConflictError):
            state.decide(planned("pi-1", 1, 0, "set_weights", blue=50, green=50))
        with pytest.raises(DecisionConflictError):
            state.decide(planned("pi-1", 1, 0, "rollback"))
        with pytest.raises(FleetStateError, match="unknown rollout"):
            state.decide(PlannedCommand(rollout_id="nope", thing="x", step_index=0, ordinal=0,
                                        action="promote", rollout_seq=1000, args={}))
        assert len(state.assignments(RID)) == 1


def test_pending_sends_after_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    state = open_state(db)
    state.start_rollout(rollout_id=RID, spec_json=SPEC)
    stage = state.decide(planned("pi-1", 0, 0, "stage", url="https://e/p", sha256="a" * 64,
                                 version="2"))
    promote = state.decide(planned("pi-1", 0, 1))
    other = state.decide(planned("pi-2", 0, 1))
    state.mark_sent(stage.command_id)
    state.mark_sent(promote.command_id)
    acked = state.record_ack(ack(stage.command_id, 5))
    assert acked is not None and acked.outcome == "ok"
    assert state.record_ack(ack("f" * 32, 6)) is None
    # crash: no close, the connection is simply dropped
    del state

    with open_state(db) as state:
        pending = state.pending_sends()
        assert [(a.thing, a.action, a.sent) for a in pending] == [
            ("pi-1", "promote", True), ("pi-2", "promote", False)]
        assert [a.command_id for a in pending] == [promote.command_id, other.command_id]
        resent = build_command(pending[0].planned, issued_at=0,
                               command_id=pending[0].command_id, attempt=pending[0].attempt)
        assert resent.command_id == promote.command_id
        assert resent.rollout_seq == promote.rollout_seq
        # the device acks the re-send: nothing left for pi-1
        state.record_ack(ack(promote.command_id, 7, thing="pi-1"))
        assert [a.thing for a in state.pending_sends(RID)] == ["pi-2"]
        assert state.install_outcomes(RID, 0) == {"pi-1": True}


def test_retry_after_failure_and_late_device_gets_rollback(tmp_path: Path) -> None:
    with open_state(tmp_path / "c.db") as state:
        state.start_rollout(rollout_id=RID, spec_json=SPEC)
        stage = state.decide(planned("pi-1", 0, 0, "stage", url="u", sha256="s", version="2"))
        state.record_ack(ack(stage.command_id, 1, outcome="failed"))
        assert state.install_outcomes(RID, 0) == {"pi-1": False}
        retry = state.retry(stage.command_id)
        assert retry.attempt == 1 and retry.command_id != stage.command_id
        assert retry.rollout_seq == command_seq(0, 0, 1)
        assert state.retry(stage.command_id) == retry  # idempotent
        assert state.decide(planned("pi-1", 0, 0, "stage", url="u", sha256="s",
                                    version="2")) == retry
        assert state.install_outcomes(RID, 0) == {}  # the retry is not acknowledged yet

        late = state.decide(planned("pi-2", 0, 1))  # pi-2 is offline, never acks
        rollback = state.decide(planned("pi-2", 1, 0, "rollback"))
        state.set_status(RID, "rolled_back", reason="p99 breach")
        assert [a.command_id for a in state.pending_sends() if a.thing == "pi-2"] == [
            rollback.command_id]
        assert state.assignments(RID, thing="pi-2")[0].command_id == late.command_id
        assert state.assignments(RID, thing="pi-2")[0].outcome == "superseded"
        decision = state.decision_for("pi-2")
        assert decision is not None and decision.action == "rollback"
        assert decision.command_id == rollback.command_id
        assert state.decision_for("pi-404") is None


def test_unusable_state_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(FleetStateError):
        ControllerState(path=path)


CRASHER = """
import os, sys
from types import MappingProxyType
from agent.controller.plan import PlannedCommand, command_seq
from agent.controller.state import ControllerState
state = ControllerState(path=sys.argv[1])
state.start_rollout(rollout_id="r-1", spec_json="{}")
a = state.decide(PlannedCommand(rollout_id="r-1", thing="pi-1", step_index=0, ordinal=1,
                                action="promote", rollout_seq=command_seq(0, 1),
                                args=MappingProxyType({})))
print(a.command_id, flush=True)
os._exit(9)  # killed between the decision and the send: no close, no checkpoint
"""


def test_decision_survives_a_killed_controller(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    run = subprocess.run([sys.executable, "-c", CRASHER, str(db)], capture_output=True,
                         text=True, timeout=30, check=False)
    assert run.returncode == 9, run.stderr
    with open_state(db) as state:
        (pending,) = state.pending_sends()
        assert pending.command_id == run.stdout.strip() and not pending.sent
