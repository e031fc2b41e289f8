"""What the controller does for each operator request (``abort``, ``promote``,
``resume``, ``start``), written to its database by any process
(:mod:`agent.cli.rollout`) and acted on at the next tick."""

from __future__ import annotations

from agent.controller.runner import RolloutRunner, RunningRollout, parse_spec_json
from agent.controller.state import TERMINAL, OperatorRequest, RolloutRecord
from agent.core.errors import AgentError


def act_on(rollouts: RolloutRunner, request: OperatorRequest) -> str:
    """Carry out one operator request; what it did, in words."""
    rollout_id = request.rollout_id
    if request.action == "start":
        try:
            return f"started {rollouts.start(parse_spec_json(request.payload))}"
        except (AgentError, ValueError) as err:
            return f"refused: {err}"
    state = rollouts.state
    record = state.rollout(rollout_id)
    run = rollouts.running.get(rollout_id)
    if record is None or run is None or record.status in TERMINAL:
        status = record.status if record else "unknown"
        return f"refused: {rollout_id} is {status}, not running or paused"
    if request.action == "abort":
        sent = rollouts.roll_back(rollout_id, run, f"by operator (request #{request.id})",
                                  status="aborted")
        return f"rollback sent to {sent} device(s)"
    if request.action == "promote":
        if record.status == "paused":
            state.set_status(rollout_id, "running", reason="promoted by operator")
        return rollouts.advance(rollout_id, run)
    if record.status != "paused":
        return f"refused: {rollout_id} is {record.status}, not paused"
    return _resume(rollouts, record, run)


def _resume(rollouts: RolloutRunner, record: RolloutRecord, run: RunningRollout) -> str:
    """Judge the paused step again, with a fresh step timeout."""
    state, rollout_id = rollouts.state, record.rollout_id
    state.set_status(rollout_id, "running", reason="resumed by operator")
    run.step_started = rollouts.clock()  # a fresh step timeout
    # Devices that were on another rollout's trial get this step's commands again
    # (their stage and the promote that failed with it), in order.
    held = state.assignments(rollout_id, step_index=record.step_index)
    blocked = {a.thing for a in held if a.outcome == "rejected" and a.code == "on_trial"}
    for a in sorted(held, key=lambda a: (a.thing, a.ordinal, a.attempt)):
        if a.thing in blocked and a.outcome == "rejected":
            rollouts.send(state.retry(a.command_id))
    retried = sorted(blocked)
    step = run.steps[record.step_index]
    return (f"step {record.step_index + 1} {step.name} judged again for up to "
            f"{run.spec.timing.step_timeout_s:g} s"
            + (f"; stage re-sent to {len(retried)} device(s)" if retried else ""))
