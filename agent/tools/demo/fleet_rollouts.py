"""Driving one rollout of the demo with live narration, and what it ends with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.controller.controller import TERMINAL, FleetController
from agent.controller.progress import FINAL_ACTIONS, final_summary
from agent.controller.spec import parse_spec
from agent.controller.state import RolloutRecord
from agent.core.errors import AgentError

Say = Callable[[str], None]
VERDICT_EVERY_S = 5.0


class DemoTimeoutError(AgentError):
    """Something the demo waits for did not happen in time (see its output folder's logs)."""


Hook = Callable[[str], None]  # called with the rollout id on every tick


@dataclass(frozen=True)
class RolloutOutcome:
    rollout_id: str
    strategy: str
    devices: int
    status: str
    reason: str
    decision_s: float  # from start to the terminal status
    steps: int


def describe_strategy(spec: dict[str, Any]) -> str:
    strategy = spec["strategy"]
    text = str(strategy["type"])
    if strategy["type"] == "canary":
        cohort = f"{strategy['percent']:g}%" if strategy.get("percent") else strategy["group"]
        text = f"canary {cohort}"
        if strategy.get("then") == "linear":
            text += f" -> linear x{strategy['linear_steps']}"
    if spec.get("shadow"):
        text = f"shadow -> {text}"
    return text


class Narrator:
    """Prints what changed since the last tick: steps, acknowledgements, verdicts."""

    def __init__(self, controller: FleetController, rollout_id: str, say: Say) -> None:
        self.controller, self.rollout_id, self.say = controller, rollout_id, say
        self._acked: set[str] = set()
        self._step = -1
        self._verdict = ""
        self._verdict_said = 0.0
        self.said_breach = ""

    def tick(self) -> RolloutRecord:
        """Say what changed; return the rollout's record as read for it."""
        state = self.controller.state
        record = state.rollout(self.rollout_id)
        assert record is not None
        run = self.controller.running.get(self.rollout_id) \
            or self.controller.finished.get(self.rollout_id)
        if run is not None and record.step_index != self._step \
                and record.step_index < len(run.steps):
            self._step = record.step_index
            step = run.steps[self._step]
            weight = "" if step.green_weight is None else f", green weight {step.green_weight}%"
            self.say(f"  step {self._step + 1}/{len(run.steps)} {step.name} ({step.mode}"
                     f"{weight}): {', '.join(step.things) or 'no devices'}")
        for a in state.assignments(self.rollout_id):
            # How the rollout ended for every device is summed up once, at the end.
            if a.action in FINAL_ACTIONS:
                continue
            if a.outcome is not None and a.command_id not in self._acked:
                self._acked.add(a.command_id)
                why = f" ({a.reason})" if a.reason and a.outcome != "ok" else ""
                self.say(f"    {a.thing}: {a.action} {a.outcome}{why}")
        verdict = run.verdict if run is not None else None
        if verdict is not None:
            text: str = verdict.status
            if verdict.breach is not None:
                text = f"breach: {verdict.breach.detail} [{verdict.breach.where}]"
            elif verdict.scopes:
                shown = [s for s in verdict.scopes if s.enough][:2]
                figures = "; ".join(
                    f"{s.where} p99 {s.green_p99_us or 0:.0f} us"
                    + (f" vs blue {s.blue_p99_us:.0f} us" if s.blue_p99_us else "")
                    + (f", agreement {s.agreement:.3f}" if s.agreement is not None else "")
                    for s in shown)
                text = f"{verdict.status}" + (f" ({figures})" if figures else "")
            # Every change of verdict; the figures of an unchanged one every few seconds.
            # (A breach is said once: the rollback follows it.)
            changed = verdict.status != self._verdict
            if verdict.status != "insufficient" and (changed or (
                    verdict.status == "pass"
                    and time.monotonic() - self._verdict_said > VERDICT_EVERY_S)):
                self._verdict, self._verdict_said = verdict.status, time.monotonic()
                self.said_breach = verdict.breach.detail if verdict.breach else ""
                self.say(f"    guardrails: {text}")
        return record


def drive(controller: FleetController, spec: dict[str, Any], *, say: Say,
          timeout_s: float, hook: Hook | None = None, period_s: float = 0.25) -> RolloutOutcome:
    """Start ``spec`` and tick the controller until the rollout ends (or pauses)."""
    parsed = parse_spec(spec)
    devices = len(controller.registry.devices_in(parsed.groups))
    say(f"\n== {parsed.name}: {parsed.model} by {describe_strategy(spec)} "
        f"on {devices} device(s)")
    started = time.monotonic()
    rollout_id = controller.start_rollout(parsed)
    steps = len(controller.running[rollout_id].steps)
    narrator = Narrator(controller, rollout_id, say)
    while True:
        controller.tick()
        record = narrator.tick()  # the status changes only in controller.tick()
        if hook is not None:
            hook(rollout_id)
        if record.status in (*TERMINAL, "paused"):
            break
        if time.monotonic() - started > timeout_s:
            raise DemoTimeoutError(f"{rollout_id} still {record.status} after {timeout_s:g} s")
        time.sleep(period_s)
    elapsed = time.monotonic() - started
    told = narrator.said_breach and narrator.said_breach in record.reason
    say(f"  => {record.status} after {elapsed:.1f} s"
        + (f": {record.reason}" if record.reason and not told else ""))
    if record.status in TERMINAL:
        _settle(controller, rollout_id, narrator, say)
    return RolloutOutcome(rollout_id=rollout_id, strategy=describe_strategy(spec),
                          devices=devices, status=record.status, reason=record.reason,
                          decision_s=elapsed, steps=steps)


def _settle(controller: FleetController, rollout_id: str, narrator: Narrator, say: Say,
            timeout_s: float = 10.0) -> None:
    """Wait (bounded) for the devices to acknowledge how the rollout ended for them
    (``confirm`` or ``rollback``) and say it once; a device that is offline gets its
    command when it returns."""
    deadline = time.monotonic() + timeout_s
    while True:
        narrator.tick()
        final = [a for a in controller.state.assignments(rollout_id)
                 if a.action in FINAL_ACTIONS]
        if all(a.outcome is not None for a in final) or time.monotonic() > deadline:
            break
        controller.tick()
        time.sleep(0.25)
    say(f"    {final_summary(final)}")


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str,
               period_s: float = 0.25, tick: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise DemoTimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(period_s)
