"""The rollouts one controller drives: plan and start them, judge each running step by
its guardrails, advance, confirm or roll back, and send every decision signed.

Every decision is persisted (``ControllerState``) before it is sent, so a
restarted controller re-sends exactly what was not acknowledged (:meth:`RolloutRunner.resume`),
and a device that comes back late gets the decision that applies to it now.

A breach a device reports about itself rolls back fleet-wide only once
``guardrails.breach_quorum`` devices report one; below that it is held, and the step
pauses for an operator instead of advancing (:mod:`agent.controller.breach_quorum`).
A device whose hardware class or package key changes while a rollout runs keeps the
place the plan gave it, but is excluded from the rollout's verdicts until it ends
(:meth:`RolloutRunner.exclude`).

A rollout ends for each device it reached with one signed command: ``confirm``
when it succeeded (the device ends its trial of green at once, so the next
rollout can start) or ``rollback`` on a breach or an abort, sent only to devices
that may hold something of this rollout (a device that refused every command
holds nothing of it; the device itself also rolls back only what this rollout did).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.controller import breach_quorum
from agent.controller.errors import OverlapError, RolloutExistsError
from agent.controller.guardrails import Verdict, evaluate
from agent.controller.plan import (
    Step,
    build_command,
    final_commands,
    plan_rollout,
    rollback_commands,
)
from agent.controller.registry import FleetRegistry
from agent.controller.spec import RolloutSpec, parse_spec
from agent.controller.state import TERMINAL, Assignment, ControllerState, RolloutStatus
from agent.controller.step_reports import StepReports
from agent.controller.verdicts import (
    blocked_on_trial,
    blocked_reason,
    package_problem,
    undecided_reason,
    verdict_detail,
)
from agent.core.crash import crash_point
from agent.wire.codec import encode
from agent.wire.messages import Event, Metrics
from agent.wire.signing import Signer
from agent.wire.topics import Topics
from agent.wire.transport import Transport

log = logging.getLogger("edge_agent.fleet")
KEEP_FINISHED = 64  # finished rollouts kept in memory (their figures are in the database)


@dataclass
class RunningRollout:
    spec: RolloutSpec
    steps: list[Step]
    step_started: float  # controller monotonic clock
    reports: StepReports = field(init=False)  # what the guardrails read, per step
    baseline: list[Metrics] = field(default_factory=list)
    breaching: dict[str, str] = field(default_factory=dict)  # thing -> its first breach
    excluded: dict[str, str] = field(default_factory=dict)  # thing -> why it does not count
    reached: set[str] = field(default_factory=set)  # devices of the steps begun so far
    held: set[str] = field(default_factory=set)  # breaching devices logged as held
    last_report_at: float | None = None  # wall clock, for breach-to-rollback timing
    heard: dict[str, float] = field(default_factory=dict)  # thing -> last report (monotonic)
    breach_seen_at: float | None = None  # the newest report the breaching verdict saw
    verdict: Verdict | None = None
    things: frozenset[str] = field(init=False)  # every step's, to route reports by

    def __post_init__(self) -> None:
        self.things = frozenset(t for s in self.steps for t in s.things)
        self.reports = StepReports(self.steps)


def parse_spec_json(text: str) -> RolloutSpec:
    return parse_spec(json.loads(text))


class RolloutRunner:
    """The running and recently finished rollouts; not thread-safe (callers hold the
    controller's lock)."""

    def __init__(self, *, transport: Transport, signer: Signer, state: ControllerState,
                 registry: FleetRegistry, prefix: str, clock: Callable[[], float]) -> None:
        self.transport, self.signer, self.state = transport, signer, state
        self.registry, self.prefix, self.clock = registry, prefix, clock
        self.running: dict[str, RunningRollout] = {}
        self.finished: OrderedDict[str, RunningRollout] = OrderedDict()
        self._latest: dict[str, deque[Metrics]] = {}
        self.excluded_reports = 0  # reports of excluded devices, not counted for a rollout

    # ---- what devices report --------------------------------------------------------------

    def observe_metrics(self, message: Metrics) -> None:
        self._latest.setdefault(message.thing, deque(maxlen=4)).append(message)
        for run in self.running.values():
            if message.thing in run.excluded:
                self.excluded_reports += 1
            elif message.thing in run.things:
                run.reports.add(message)
                run.last_report_at = time.time()
                run.heard[message.thing] = self.clock()

    def observe_breach(self, message: Event) -> None:
        """A device broke a local guardrail (and rolled itself back): kept once per device,
        weighed against the quorum when the step is judged."""
        for run in self.running.values():
            # Only a breach by this rollout's candidate counts (a device restarting
            # after an earlier trial reports its own rollback too), of a device the
            # rollout has reached.
            if message.data.get("version") != run.spec.model or message.thing not in run.reached:
                continue
            if message.thing in run.excluded:
                self.excluded_reports += 1
            else:
                run.breaching.setdefault(message.thing, breach_quorum.describe_event(message))

    def exclude(self, thing: str, reason: str) -> list[str]:
        """Leave ``thing`` out of the verdicts of every running rollout it is in, until
        each ends (its hardware class or package key changed under the plan); the ids."""
        affected = []
        for rollout_id, run in self.running.items():
            if thing not in run.things or thing in run.excluded:
                continue
            run.excluded[thing] = reason
            run.heard.pop(thing, None)
            run.breaching.pop(thing, None)
            self.state.log(rollout_id, breach_quorum.EXCLUDED,
                           detail={"thing": thing, "reason": reason[:300]})
            log.warning("rollout %s: %r no longer counts: %s", rollout_id, thing, reason)
            affected.append(rollout_id)
        return affected

    def catch_up(self, thing: str) -> None:
        """A device (re)appeared: send it whatever it has not acknowledged."""
        for assignment in self.state.pending_sends():
            if assignment.thing == thing:
                self.send(assignment)

    # ---- starting and resuming ------------------------------------------------------------

    def start(self, spec: RolloutSpec) -> str:
        """Validate, plan and start ``spec``; nothing is recorded unless all of it passes.
        A rollout of this name that this controller runs already is carried on."""
        existing = self.state.rollout(spec.name)
        if existing is not None:
            if spec.name in self.running:
                if json.loads(existing.spec_json) != json.loads(spec.model_dump_json()):
                    raise RolloutExistsError(
                        f"rollout {spec.name!r} is {existing.status} with another spec")
                return spec.name  # resumed after a restart: carry on where it was
            raise RolloutExistsError(
                f"rollout {spec.name!r} already ended ({existing.status}): a new "
                "rollout needs a new name")
        spec.validate_against(self.registry)
        steps = plan_rollout(spec, self.registry.devices_in(spec.groups))
        self._check_overlap(spec.name, steps)
        record = self.state.start_rollout(rollout_id=spec.name, spec_json=spec.model_dump_json())
        self.running[record.rollout_id] = RunningRollout(spec, steps, self.clock())
        self.state.log(record.rollout_id, "planned", detail={"steps": [s.name for s in steps]})
        self._begin_step(record.rollout_id, 0)
        return record.rollout_id

    def _check_overlap(self, name: str, steps: list[Step]) -> None:
        things = {t for s in steps for t in s.things}
        for other_id, other in self.running.items():
            shared = sorted(things & other.things)
            if shared:
                record = self.state.rollout(other_id)
                status = record.status if record else "running"
                raise OverlapError(
                    f"{len(shared)} device(s) of {name} are in rollout {other_id} ({status}), "
                    f"e.g. {shared[0]}: promote, abort or wait for it first")

    def resume(self) -> None:
        """After a restart: re-plan running and paused rollouts and re-send what was not
        acknowledged."""
        records = self.state.rollouts(status="running") + self.state.rollouts(status="paused")
        for record in records:
            if record.rollout_id in self.running:
                continue
            spec = parse_spec_json(record.spec_json)
            steps = plan_rollout(spec, self.registry.devices_in(spec.groups))
            run = self.running[record.rollout_id] = RunningRollout(spec, steps, self.clock())
            run.reached = {t for s in steps[:record.step_index + 1] for t in s.things}
            run.breaching, run.excluded = breach_quorum.restore(self.state, record.rollout_id)
            run.held = set(run.breaching)
            if record.status == "paused":
                continue  # waits for the operator
            begun = [d for d in self.state.decisions(record.rollout_id) if d.kind == "rollback"]
            if begun:  # killed in the middle of a fleet-wide rollback: finish it
                reason = str((begun[-1].detail or {}).get("reason", "rollback resumed"))
                self.roll_back(record.rollout_id, run, reason)
                continue
            # A kill may have stopped the step half decided: decide the rest (deciding
            # is idempotent, so what was decided before stays exactly as it was).
            self._decide_step(record.rollout_id, record.step_index)
        for assignment in self.state.pending_sends():
            self.send(assignment)

    # ---- judging --------------------------------------------------------------------------

    def judge_all(self) -> None:
        """Judge every running step; forget rollouts that ended elsewhere."""
        for rollout_id, run in list(self.running.items()):
            record = self.state.rollout(rollout_id)
            if record is None or record.status in TERMINAL:
                self.running.pop(rollout_id, None)
            elif record.status == "running":
                self._judge(rollout_id, run, record.step_index)

    def _judge(self, rollout_id: str, run: RunningRollout, index: int) -> None:
        step = run.steps[index]
        assignments = self.state.assignments(rollout_id, step_index=index)
        problem = package_problem(run.spec, assignments)
        if problem is not None:
            self.roll_back(rollout_id, run, problem)
            return
        blocked = blocked_on_trial(assignments)
        if blocked:
            self.state.set_status(rollout_id, "paused",
                                  reason=blocked_reason(step, rollout_id, blocked))
            return
        # A device silent for longer than stale_after_s (by this controller's clock) no
        # longer counts: its old reports must not vouch for the step.
        cutoff = self.clock() - run.spec.timing.stale_after_s
        fresh = run.reports.for_step(step, lambda thing: thing not in run.excluded
                                     and run.heard.get(thing, 0.0) >= cutoff)
        installs = {thing: ok for thing, ok in
                    self.state.install_outcomes(rollout_id, index).items()
                    if thing not in run.excluded}
        verdict = evaluate(run.spec.guardrails, fresh, step=step, baseline=run.baseline,
                           installs=installs)
        run.verdict = verdict
        self.state.log(rollout_id, "verdict", step_index=index,
                       detail=verdict_detail(verdict, run.spec.guardrails))
        fleet_breaches, device_health = breach_quorum.split_breaches(verdict.breaches)
        if fleet_breaches:
            breach = fleet_breaches[0]
            run.breach_seen_at = run.last_report_at
            self.roll_back(rollout_id, run, f"{breach.rule} in {breach.where}: {breach.detail}")
            return
        if self._weigh_device_breaches(rollout_id, run, index, device_health):
            return
        elapsed = self.clock() - run.step_started
        # Held breaches are the verdict's only ones: the fleet passes when no scope is short.
        if run.breaching and not verdict.short and elapsed >= step.watch_s:
            needed = breach_quorum.quorum(run.spec.guardrails.breach_quorum, len(run.things))
            self.state.set_status(rollout_id, "paused", reason=breach_quorum.held_reason(
                step.name, rollout_id, run.breaching, needed))
        elif verdict.status == "pass" and elapsed >= step.watch_s:
            self.advance(rollout_id, run)
        elif elapsed >= run.spec.timing.step_timeout_s:
            self.state.set_status(rollout_id, "paused", reason=undecided_reason(
                step, rollout_id, elapsed, verdict, run.spec.guardrails))

    def _weigh_device_breaches(self, rollout_id: str, run: RunningRollout, index: int,
                               device_health: dict[str, str]) -> bool:
        """Roll back once the devices breaching reach the quorum (True); else hold each
        new one, in the decisions log."""
        for thing, what in device_health.items():
            if thing not in run.excluded:
                run.breaching.setdefault(thing, what)
        if not run.breaching:
            return False
        needed = breach_quorum.quorum(run.spec.guardrails.breach_quorum, len(run.things))
        if len(run.breaching) >= needed:
            run.breach_seen_at = run.last_report_at
            self.roll_back(rollout_id, run, breach_quorum.rollback_reason(run.breaching, needed))
            return True
        for thing, what in run.breaching.items():
            if thing not in run.held:
                run.held.add(thing)
                breach_quorum.log_held(self.state, rollout_id, index, thing, what,
                                       devices=len(run.breaching), needed=needed)
                log.warning("rollout %s: breach held (%d of %d devices): %s", rollout_id,
                            len(run.breaching), needed, what)
        return False

    def advance(self, rollout_id: str, run: RunningRollout) -> str:
        """On to the next step, or success after the last; what it did, in words."""
        record = self.state.rollout(rollout_id)
        assert record is not None
        if record.step_index + 1 >= len(run.steps):
            confirmed = self._succeed(rollout_id, run)
            return f"succeeded: confirm sent to {confirmed} device(s)"
        sent = self._begin_step(rollout_id, record.step_index + 1)
        step = run.steps[record.step_index + 1]
        return f"advanced to step {step.index + 1} {step.name}: commands for {sent} device(s)"

    def _begin_step(self, rollout_id: str, index: int) -> int:
        run = self.running[rollout_id]
        step = run.steps[index]
        self.state.set_step(rollout_id, index)
        run.step_started = self.clock()
        run.reached.update(step.things)
        run.baseline = [m for thing in step.switched for m in self._latest.get(thing, ())]
        self.state.log(rollout_id, "step", step_index=index, detail={
            "name": step.name, "mode": step.mode, "green_weight": step.green_weight,
            "sample_rate": step.sample_rate, "watch_s": step.watch_s,
            "devices": len(step.things)})
        self._decide_step(rollout_id, index, send=True)
        return len(step.things)

    def _decide_step(self, rollout_id: str, index: int, *, send: bool = False) -> None:
        for planned in self.running[rollout_id].steps[index].commands:
            assignment = self.state.decide(planned)
            crash_point("controller-after-decide")
            if send and assignment.outcome is None:
                self.send(assignment)

    def _succeed(self, rollout_id: str, run: RunningRollout) -> int:
        """The last step passed: every device serving green ends its trial now."""
        refused = {a.thing for a in self.state.assignments(rollout_id)
                   if a.action == "promote" and a.outcome in ("rejected", "failed")}
        things = sorted(set(run.steps[-1].cumulative) - refused)
        decided = [self.state.decide(p) for p in final_commands(run.steps, things, "confirm")]
        self.state.log(rollout_id, "confirm", step_index=len(run.steps),
                       detail={"devices": len(decided)})
        self.state.set_status(rollout_id, "succeeded")
        self._finish(rollout_id, run)
        for assignment in decided:
            if assignment.outcome is None:
                self.send(assignment)
        log.info("rollout %s succeeded: confirm sent to %d device(s)", rollout_id, len(things))
        return len(things)

    def roll_back(self, rollout_id: str, run: RunningRollout, reason: str, *,
                  status: RolloutStatus = "rolled_back") -> int:
        """Roll back every device that may hold something of this rollout; how many."""
        record = self.state.rollout(rollout_id)
        assert record is not None
        touched = {t for s in run.steps[:record.step_index + 1] for t in s.things}
        # A device that refused every command of this rollout holds nothing of it: a
        # rollback there could only undo what an earlier rollout installed.
        answered: dict[str, set[str | None]] = {}
        for a in self.state.assignments(rollout_id):
            answered.setdefault(a.thing, set()).add(a.outcome)
        untouched = {t for t, outcomes in answered.items()
                     if outcomes <= {"rejected", "superseded"} and "rejected" in outcomes}
        things = sorted(touched - untouched)
        self.state.log(rollout_id, "rollback", step_index=record.step_index,
                       detail={"reason": reason[:500], "devices": len(things)})
        for i, planned in enumerate(rollback_commands(run.steps, things)):
            if i == len(things) // 2:
                crash_point("controller-mid-rollback")
            self.send(self.state.decide(planned))
        self.state.set_status(rollout_id, status, reason=reason[:500])
        self._finish(rollout_id, run)
        log.warning("rollout %s %s: %s", rollout_id, status, reason)
        return len(things)

    def _finish(self, rollout_id: str, run: RunningRollout) -> None:
        self.running.pop(rollout_id, None)
        self.finished[rollout_id] = run
        while len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)

    # ---- sending --------------------------------------------------------------------------

    def send(self, assignment: Assignment) -> None:
        """Sign and publish a decided command, then record that it was sent."""
        command = self.signer.sign(build_command(assignment.planned,
                                                 issued_at=int(time.time() * 1000),
                                                 command_id=assignment.command_id,
                                                 attempt=assignment.attempt))
        topic = Topics(thing=assignment.thing, prefix=self.prefix).commands
        # Fire and keep going: QoS 1 with the device's persistent session queues it at
        # the broker while the device is away; unacknowledged ones are re-sent on return.
        self.transport.publish(topic, encode(command))
        crash_point("controller-after-publish")
        self.state.mark_sent(assignment.command_id)
