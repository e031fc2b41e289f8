"""The fleet controller at run time: ingest device reports, send signed decisions, advance
or roll back rollouts by their guardrails.

One process, two threads: the transport's callback thread ingests (decodes,
drops stale reports by sequence and the controller's own clock, records acks),
and the caller's thread calls :meth:`FleetController.tick` about once a second
to judge steps. Every decision is persisted (``ControllerState``) before it is
sent, so a restarted controller re-sends exactly what was not acknowledged, and
a device that comes back late gets the decision that applies to it now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.fleet.guardrails import Verdict, evaluate
from agent.fleet.plan import PlannedCommand, Step, build_command, plan_rollout, rollback_commands
from agent.fleet.registry import FleetRegistry
from agent.fleet.spec import RolloutSpec, parse_spec
from agent.fleet.state import Assignment, ControllerState, RolloutStatus
from agent.protocol.codec import decode, encode
from agent.protocol.errors import ProtocolError
from agent.protocol.messages import Ack, Event, Heartbeat, Metrics, Register, UpMessage
from agent.protocol.senders import SenderTracker
from agent.protocol.signing import Signer
from agent.swap.crash import crash_point
from agent.transport.base import Transport, TransportError

log = logging.getLogger("edge_agent.fleet")
TERMINAL = ("succeeded", "rolled_back", "aborted")
# A device that breaks a local guardrail rolls itself back at once; for the fleet that
# is a breach of the rollout as well.
DEVICE_BREACHES = ("guardrail_breach", "local_rollback")


@dataclass
class _Running:
    spec: RolloutSpec
    steps: list[Step]
    step_started: float  # controller monotonic clock
    reports: list[Metrics] = field(default_factory=list)
    baseline: list[Metrics] = field(default_factory=list)
    device_breaches: list[Event] = field(default_factory=list)
    last_report_at: float | None = None  # wall clock, for breach-to-rollback timing
    heard: dict[str, float] = field(default_factory=dict)  # thing -> last report (monotonic)
    breach_seen_at: float | None = None  # the newest report the breaching verdict saw
    rolled_back_at: float | None = None
    verdict: Verdict | None = None
    things: frozenset[str] = field(init=False)  # every step's, to route reports by

    def __post_init__(self) -> None:
        self.things = frozenset(t for s in self.steps for t in s.things)


class FleetController:
    def __init__(self, *, transport: Transport, signer: Signer, state: ControllerState,
                 registry: FleetRegistry | None = None, prefix: str = "edge",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport, self.signer, self.state = transport, signer, state
        self.registry = registry or FleetRegistry(clock=clock)
        self.prefix, self.clock = prefix, clock
        self.tracker = SenderTracker(clock=clock)
        self.running: dict[str, _Running] = {}
        self.finished: dict[str, _Running] = {}
        self._latest: dict[str, deque[Metrics]] = {}
        self._lock = threading.RLock()
        self.ingested = 0  # fresh messages taken in (duplicates and stale ones are not)
        self.metrics_ingested = 0
        self.ingest_cpu_s = 0.0  # CPU time spent in on_message, on the threads that ran it
        self.invalid = 0
        self.events: list[Event] = []
        self._paused: set[str] = set()

    # ---- ingest (transport thread) ------------------------------------------------------

    def start(self, *, connect_timeout_s: float = 10.0) -> None:
        try:
            self.transport.connect(connect_timeout_s)
        except TransportError as err:
            log.warning("controller not connected yet: %s", err)
        with self._lock:
            for raw in self.state.registrations():  # devices known before a restart
                self.registry.observe(decode(raw, expect=Register))
        self.transport.subscribe(f"{self.prefix}/+/+", self.on_message)
        self.resume()

    def on_message(self, topic: str, payload: bytes) -> None:
        started = time.thread_time()
        try:
            self._on_message(topic, payload)
        finally:
            self.ingest_cpu_s += time.thread_time() - started

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/commands") or topic.endswith("/emf"):
            return
        try:
            message = decode(payload, expect=UpMessage)
        except ProtocolError:
            self.invalid += 1
            return
        with self._lock:
            if not self.tracker.observe(message):
                return  # a duplicate or stale report: judged by sequence, never device time
            self.ingested += 1
            self._ingest(message)

    def _ingest(self, message: UpMessage) -> None:
        if isinstance(message, Register | Heartbeat):
            self.registry.observe(message)
            if isinstance(message, Register):
                self.state.save_registration(message.thing, encode(message))
                self._catch_up(message.thing)
        elif isinstance(message, Metrics):
            self.metrics_ingested += 1
            self._latest.setdefault(message.thing, deque(maxlen=4)).append(message)
            for run in self.running.values():
                if message.thing in run.things:
                    run.reports.append(message)
                    run.last_report_at = time.time()
                    run.heard[message.thing] = self.clock()
        elif isinstance(message, Ack):
            self.state.record_ack(message)
        elif isinstance(message, Event):
            self.events.append(message)
            if message.kind in DEVICE_BREACHES:
                for run in self.running.values():
                    # Only a breach by this rollout's candidate counts (a device restarting
                    # after an earlier trial reports its own rollback too).
                    if message.data.get("version") == run.spec.model and \
                            message.thing in run.things:
                        run.device_breaches.append(message)

    def _catch_up(self, thing: str) -> None:
        """A device (re)appeared: send it whatever it has not acknowledged."""
        for assignment in self.state.pending_sends():
            if assignment.thing == thing:
                self._send(assignment)

    # ---- operator actions (any thread) ---------------------------------------------------

    def start_rollout(self, spec: RolloutSpec) -> str:
        with self._lock:
            existing = self.state.rollout(spec.name)
            if existing is not None and spec.name in self.running:
                return spec.name  # resumed after a restart: carry on where it was
            spec.validate_against(self.registry)
            record = self.state.start_rollout(rollout_id=spec.name,
                                              spec_json=spec.model_dump_json())
            steps = plan_rollout(spec, self.registry.devices_in(spec.groups))
            self.running[record.rollout_id] = _Running(spec, steps, self.clock())
            self.state.log(record.rollout_id, "planned",
                           detail={"steps": [s.name for s in steps]})
            self._begin_step(record.rollout_id, 0)
            return record.rollout_id

    def resume(self) -> None:
        """After a restart: re-plan running rollouts and re-send what was not acknowledged."""
        with self._lock:
            for record in self.state.rollouts(status="running"):
                if record.rollout_id in self.running:
                    continue
                spec = parse_spec_json(record.spec_json)
                steps = plan_rollout(spec, self.registry.devices_in(spec.groups))
                run = self.running[record.rollout_id] = _Running(spec, steps, self.clock())
                begun = [d for d in self.state.decisions(record.rollout_id)
                         if d.kind == "rollback"]
                if begun:  # killed in the middle of a fleet-wide rollback: finish it
                    reason = str((begun[-1].detail or {}).get("reason", "rollback resumed"))
                    self._roll_back(record.rollout_id, run, reason)
                    continue
                # A kill may have stopped the step half decided: decide the rest (deciding
                # is idempotent, so what was decided before stays exactly as it was).
                self._decide_step(record.rollout_id, record.step_index)
            for assignment in self.state.pending_sends():
                self._send(assignment)


    # ---- schedule (caller's thread) -----------------------------------------------------

    def tick(self) -> None:
        with self._lock:
            for rollout_id, run in list(self.running.items()):
                record = self.state.rollout(rollout_id)
                if record is None:
                    self.running.pop(rollout_id, None)
                elif record.status == "aborted":  # by an operator, possibly from another process
                    self._roll_back(rollout_id, run, record.reason or "aborted by operator",
                                    status="aborted")
                elif record.status in TERMINAL:
                    self.running.pop(rollout_id, None)
                elif record.status == "paused":
                    self._paused.add(rollout_id)
                elif rollout_id in self._paused:  # a person resumed it: go on to the next step
                    self._paused.discard(rollout_id)
                    self._advance(rollout_id, run)
                else:
                    self._judge(rollout_id, run, record.step_index)

    def _judge(self, rollout_id: str, run: _Running, index: int) -> None:
        step = run.steps[index]
        # A device silent for longer than stale_after_s (by this controller's clock) no
        # longer counts: its old reports must not vouch for the step.
        cutoff = self.clock() - run.spec.timing.stale_after_s
        fresh = [r for r in run.reports if run.heard.get(r.thing, 0.0) >= cutoff]
        verdict = evaluate(run.spec.guardrails, fresh, step=step,
                           baseline=run.baseline,
                           installs=self.state.install_outcomes(rollout_id, index))
        run.verdict = verdict
        self._record_verdict(rollout_id, index, verdict)
        if run.device_breaches:
            event = run.device_breaches[0]
            run.breach_seen_at = run.last_report_at
            rule = event.data.get("rule", "")
            self._roll_back(rollout_id, run,
                            f"{event.kind} ({rule}) on {event.thing}: {event.detail}")
            return
        breach = verdict.breach
        if breach is not None:
            run.breach_seen_at = run.last_report_at
            self._roll_back(rollout_id, run, f"{breach.rule} in {breach.where}: {breach.detail}")
            return
        elapsed = self.clock() - run.step_started
        if verdict.status == "pass" and elapsed >= step.watch_s:
            self._advance(rollout_id, run)
        elif elapsed >= run.spec.timing.step_timeout_s:
            self.state.set_status(rollout_id, "paused", reason=(
                f"step {step.name} undecided after {elapsed:.0f} s: not enough samples or "
                f"devices in {', '.join(verdict.short) or 'every scope'}"))

    def _record_verdict(self, rollout_id: str, index: int, verdict: Verdict) -> None:
        """Keep the figures of each evaluation, for the report's timeline."""
        worst = [f for f in verdict.scopes if f.green_p99_us is not None]
        agreements = [f.agreement for f in verdict.scopes if f.agreement is not None]
        self.state.log(rollout_id, "verdict", step_index=index, detail={
            "status": verdict.status,
            "green_p99_us": max((f.green_p99_us or 0.0 for f in worst), default=None),
            "blue_p99_us": max((f.blue_p99_us or 0.0 for f in worst), default=None),
            "agreement": min(agreements, default=None)})

    def _advance(self, rollout_id: str, run: _Running) -> None:
        record = self.state.rollout(rollout_id)
        assert record is not None
        if record.step_index + 1 >= len(run.steps):
            self.state.set_status(rollout_id, "succeeded")
            self.state.log(rollout_id, "succeeded", step_index=record.step_index)
            self.running.pop(rollout_id, None)
            return
        self._begin_step(rollout_id, record.step_index + 1)

    def _begin_step(self, rollout_id: str, index: int) -> None:
        run = self.running[rollout_id]
        step = run.steps[index]
        self.state.set_step(rollout_id, index)
        run.step_started = self.clock()
        run.baseline = [m for thing in step.switched for m in self._latest.get(thing, ())]
        self.state.log(rollout_id, "step", step_index=index, detail={"name": step.name})
        self._decide_step(rollout_id, index, send=True)

    def _decide_step(self, rollout_id: str, index: int, *, send: bool = False) -> None:
        for planned in self.running[rollout_id].steps[index].commands:
            assignment = self.state.decide(planned)
            crash_point("controller-after-decide")
            if send and assignment.outcome is None:
                self._send(assignment)

    def _roll_back(self, rollout_id: str, run: _Running, reason: str, *,
                   status: RolloutStatus = "rolled_back") -> None:
        record = self.state.rollout(rollout_id)
        assert record is not None
        touched = {t for s in run.steps[:record.step_index + 1] for t in s.things}
        self.state.log(rollout_id, "rollback", step_index=record.step_index,
                       detail={"reason": reason[:500], "devices": len(touched)})
        for i, planned in enumerate(rollback_commands(run.steps, sorted(touched))):
            if i == len(touched) // 2:
                crash_point("controller-mid-rollback")
            self._send(self.state.decide(planned))
        self.state.set_status(rollout_id, status, reason=reason[:500])
        run.rolled_back_at = self.clock()
        self.finished[rollout_id] = run
        self.running.pop(rollout_id, None)
        log.warning("rollout %s %s: %s", rollout_id, status, reason)

    # ---- sending --------------------------------------------------------------------------

    def _send(self, assignment: Assignment) -> None:
        planned: PlannedCommand = assignment.planned
        command = self.signer.sign(build_command(planned, issued_at=int(time.time() * 1000),
                                                 command_id=assignment.command_id,
                                                 attempt=assignment.attempt))
        topic = f"{self.prefix}/{assignment.thing}/commands"
        # Fire and keep going: QoS 1 with the device's persistent session queues it at
        # the broker while the device is away; unacknowledged ones are re-sent on return.
        self.transport.publish(topic, encode(command))
        crash_point("controller-after-publish")
        self.state.mark_sent(assignment.command_id)


def parse_spec_json(text: str) -> RolloutSpec:
    return parse_spec(json.loads(text))
