"""How a simulated device answers a command it admitted, as
:class:`~agent.device.app.swaps.SwapController` answers it, with the same ack ``data``
codes: a stage during a trial is refused (``on_trial``); ``confirm`` ends the trial of the
rollout that promoted; ``rollback`` undoes only what its own rollout did (else
``nothing_to_roll_back``); ``announce`` sends a register; ``status`` sends the state.

Each function changes the device's model state and returns the ack's outcome, reason and
data; messages besides the ack go into ``out``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.tools.fleet_sim.lanes import Answer, Out, carried_lane, new_lane
from agent.wire.commands import Command, SetWeightsArgs, ShadowArgs, StageArgs
from agent.wire.messages import Event, State

if TYPE_CHECKING:
    from agent.tools.fleet_sim.device import SimDevice


def answer(device: SimDevice, command: Command, now: float, out: list[Out]) -> Answer:
    """Act on ``command`` (already gated); the ack's outcome, reason and data."""
    args = command.args
    if isinstance(args, StageArgs):
        return _stage(device, command, args, now)
    if command.action == "status":
        out.append(device.message(State, in_reply_to=command.command_id,
                                  **device.state_fields(now)))
        return "ok", "", {}
    if command.action == "announce":
        out.append(device.register())
        return "ok", "register sent", {}
    if command.action == "confirm":
        return _confirm(device, command)
    if command.action == "rollback":
        return _roll_back(device, command, now)
    if command.action == "capture":  # a simulated device keeps no captures
        return "rejected", "capture is not enabled in this device's configuration", \
            {"code": "capture_rules_refused"}
    if device.green is None:
        return "rejected", f"cannot {command.action}: no candidate model is staged", {}
    _enter(device, command)
    if isinstance(args, ShadowArgs):
        device.mode, device.weights, device.sample_rate = "shadow", (100, 0), args.sample_rate
        device.green_rollout = command.rollout_id
        return "ok", f"shadowing {device.green.label}", {}
    if isinstance(args, SetWeightsArgs):
        device.mode, device.weights = "weighted", (args.blue, args.green)
        device.green_rollout = command.rollout_id
        return "ok", f"weights blue {args.blue} / green {args.green}", {}
    return _promote(device, command, now, out)


def _enter(device: SimDevice, command: Command) -> None:
    if device.rollout is not None and device.rollout[0] != command.rollout_id:
        device.guard.retire(device.rollout[0])  # its delayed commands are stale now
    device.rollout = (command.rollout_id, command.rollout_seq)


def _promote(device: SimDevice, command: Command, now: float, out: list[Out]) -> Answer:
    """Green becomes blue, on trial."""
    green = device.green
    assert green is not None
    device.previous, device.previous_label = device.blue, device.blue.label
    device.previous_rollout, device.blue_rollout = device.blue_rollout, command.rollout_id
    device.blue = carried_lane(green, device.blue.series + 1)
    device.green, device.green_rollout = None, None
    device.mode, device.weights = "serve", (100, 0)
    device.trial_started, device.trial_rollout = now, command.rollout_id
    trial_s = device.ctx.trial_s
    out.append(device.message(
        Event, kind="model_activated", detail=f"{green.label} serves, on trial for {trial_s:g} s",
        data={"version": green.label, "role": "blue"}))
    return "ok", f"{green.label} promoted (trial {trial_s:g} s)", {"model": green.label}


def _stage(device: SimDevice, command: Command, args: StageArgs, now: float) -> Answer:
    if device.trial_started is not None:
        label, owner = device.blue.label, device.trial_rollout or "unknown"
        return "rejected", (f"{label} promoted by rollout {owner} is on trial: rollout "
                            f"{owner} must confirm or roll it back first"), \
            {"code": "on_trial", "trial_rollout_id": owner, "model": label}
    _enter(device, command)
    device.green_series += 1
    device.green = new_lane(args.version, device.green_series, now)
    device.green_rollout = command.rollout_id
    device.green_since = now
    device.mode, device.weights = "serve", (100, 0)
    data: dict[str, Any] = {"model": args.version}
    if args.package_version is not None:  # the simulated package is the one asked for
        data["package_version"] = args.package_version
    return "ok", f"{args.version} staged", data


def _confirm(device: SimDevice, command: Command) -> Answer:
    rollout, serving = command.rollout_id, device.blue.label
    if device.trial_started is not None and device.trial_rollout == rollout:
        _enter(device, command)
        device.trial_started = device.trial_rollout = None
        device.previous = None
        return "ok", f"{serving} confirmed", {"model": serving}
    if device.trial_started is not None:
        owner = device.trial_rollout or "unknown"
        return "rejected", f"{serving} on trial was promoted by rollout {owner}, not " \
            f"{rollout}", {"code": "other_rollout", "model": serving,
                           "trial_rollout_id": owner}
    if device.blue_rollout == rollout:
        return "ok", f"{serving} already confirmed", {"model": serving}
    return "rejected", f"nothing of rollout {rollout} to confirm; {serving} serves", \
        {"code": "nothing_to_confirm", "model": serving}


def _roll_back(device: SimDevice, command: Command, now: float) -> Answer:
    """Undo what the command's rollout did: its trial, its candidate, or the model it
    promoted; anything else stays (an ok no-op)."""
    rollout = command.rollout_id
    dropped = device.blue.label
    if device.trial_started is not None and device.trial_rollout == rollout \
            and device.previous is not None:
        device.blue = carried_lane(device.previous, device.blue.series + 1)
        device.blue_rollout = device.previous_rollout
        device.previous, device.previous_label, device.previous_rollout = None, None, None
        device.trial_started = device.trial_rollout = None
    elif device.green is not None and device.green_rollout == rollout:
        dropped, device.green, device.green_rollout = device.green.label, None, None
    elif device.trial_started is None and device.blue_rollout == rollout:
        if device.previous_label is None:
            return "rejected", f"{dropped} of rollout {rollout} has no previous version " \
                "to go back to", {"code": "no_previous", "model": dropped}
        device.blue = new_lane(device.previous_label, device.blue.series + 1, now)
        device.blue_rollout = device.previous_rollout
        device.previous_label = device.previous_rollout = None
    else:
        return "ok", f"nothing of rollout {rollout} on this device; {dropped} serves", \
            {"code": "nothing_to_roll_back", "model": dropped}
    _enter(device, command)
    device.mode, device.weights = "serve", (100, 0)
    return "ok", f"{dropped} rolled back; {device.blue.label} serves", \
        {"model": device.blue.label}
