"""What the operator reads about a rollout, drawn from the controller's database alone, so
the process that runs the controller and any other terminal print the same thing.

``progress_line``: one line per change of a running rollout (step, acknowledgements,
verdict with samples against ``min_samples`` and devices against ``min_devices``,
bake time left). ``status_lines``: a rollout's state, the operator's requests with
their effect, and each device's commands with their outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agent.controller.state import Assignment, ControllerState, RolloutRecord

FINAL_ACTIONS = ("rollback", "confirm")


def step_name(state: ControllerState, record: RolloutRecord) -> str:
    step = state.last_decision(record.rollout_id, "step", step_index=record.step_index)
    return str((step.detail if step else {}).get("name", "-"))


def step_count(state: ControllerState, rollout_id: str) -> int:
    planned = state.last_decision(rollout_id, "planned")
    return len((planned.detail if planned else {}).get("steps", ())) or 1


def progress_line(state: ControllerState, record: RolloutRecord, *,
                  now: float | None = None) -> tuple[str, str]:
    """``(line, shape)``: the line to print, and the part of it that is worth a new line
    when it changes (the figures alone change on every tick)."""
    rid, index = record.rollout_id, record.step_index
    step = state.last_decision(rid, "step", step_index=index)
    detail: Mapping[str, Any] = step.detail if step else {}
    acks = [a for a in state.assignments(rid, step_index=index)]
    done = sum(a.outcome is not None for a in acks)
    head = (f"  [{record.status}] step {index + 1}/{step_count(state, rid)} "
            f"{detail.get('name', '-')}: {done}/{len(acks)} commands acknowledged")
    verdict = state.last_decision(rid, "verdict", step_index=index)
    if verdict is None:
        return head + "; no verdict yet", head
    v = verdict.detail
    status = str(v.get("status", "-"))
    text = f"{head}; guardrails {status}"
    if "samples" in v:
        text += (f": {v['samples']}/{v['min_samples']} samples, {v['devices']}/"
                 f"{v['min_devices']} devices")
    if status == "breach" and v.get("breach"):
        text += f" ({v['breach']})"
    watch_s = detail.get("watch_s")
    if record.status == "running" and isinstance(watch_s, int | float):
        left = watch_s - ((time.time() if now is None else now) - record.step_started_at)
        text += f"; bake {left:.0f} s left" if left > 0 else "; bake done"
    return text, f"{head} {status}"


def final_summary(assignments: list[Assignment]) -> str:
    """``rollback: 3/3 acknowledged (2 rolled back, 1 had nothing of this rollout left)``."""
    if not assignments:
        return "no device to send it to"
    action = assignments[0].action
    acked = [a for a in assignments if a.outcome is not None]
    kinds: dict[str, int] = {}
    for a in acked:
        if a.outcome == "ok" and a.code == "nothing_to_roll_back":
            key = "had nothing of this rollout left"
        elif a.outcome == "ok":
            key = "rolled back" if action == "rollback" else "confirmed"
        else:
            key = f"{a.outcome}"
        kinds[key] = kinds.get(key, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    pending = len(assignments) - len(acked)
    return (f"{action}: {len(acked)}/{len(assignments)} acknowledged"
            + (f" ({parts})" if parts else "")
            + (f"; {pending} pending: sent again when the device returns" if pending else ""))


def status_lines(state: ControllerState, record: RolloutRecord) -> list[str]:
    rid = record.rollout_id
    lines = [f"{rid}: {record.status} at step {record.step_index + 1}/"
             f"{step_count(state, rid)} {step_name(state, record)}"
             + (f" ({record.reason})" if record.reason else "")]
    for request in state.requests(rid):
        effect = request.effect if request.handled_at is not None else \
            "waiting for the controller"
        lines.append(f"  request #{request.id} {request.action}: {effect}")
    by_step: dict[int, list[Assignment]] = {}
    for a in state.assignments(rid):
        by_step.setdefault(a.step_index, []).append(a)
    for index, items in sorted(by_step.items()):
        final = items[0].action in FINAL_ACTIONS
        label = items[0].action if final else f"step {index + 1}"
        lines.append(f"  {label}: " + " ".join(_outcome(a, final) for a in items))
        if final:
            lines.append(f"    {final_summary(items)}")
        for a in items:
            if a.outcome in ("rejected", "failed") and a.reason:
                lines.append(f"    {a.thing} {a.action} {a.outcome}: {a.reason}")
    return lines


def _outcome(a: Assignment, final: bool) -> str:
    outcome = a.outcome or "pending"
    if a.code:
        outcome += f"[{a.code}]"
    return f"{a.thing}={outcome}" if final else f"{a.thing}:{a.action}={outcome}"
