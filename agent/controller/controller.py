"""The fleet controller at run time: ingest device reports, send signed decisions, advance
or roll back rollouts by their guardrails, and carry out the operator's requests.

One process, two threads: the transport's callback thread ingests (decodes,
drops stale reports by sequence and the controller's own clock, records acks),
and the caller's thread calls :meth:`FleetController.tick` about once a second.
A tick acts on the operator requests in the database (``abort``, ``promote``,
``resume``, ``start``, written by any process: :mod:`agent.cli.rollout`) and
judges every running step. Every decision is persisted (``ControllerState``)
before it is sent, so a restarted controller re-sends exactly what was not
acknowledged, and a device that comes back late gets the decision that applies
to it now.

A rollout ends for each device it reached with one signed command: ``confirm``
when it succeeded (the device ends its trial of green at once, so the next
rollout can start) or ``rollback`` on a breach or an abort, sent only to devices
that may hold something of this rollout (a device that refused every command
holds nothing of it; the device itself also rolls back only what this rollout
did). Discovery: devices register on start, on an ``announce`` command (sent to
the spec's groups by :meth:`FleetController.announce`, and to any device heard
only by heartbeat) and their heartbeats carry their profile and groups.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.controller.errors import OverlapError, RolloutExistsError
from agent.controller.guardrails import Verdict, evaluate
from agent.controller.plan import (
    PlannedCommand,
    Step,
    build_command,
    final_commands,
    plan_rollout,
    rollback_commands,
)
from agent.controller.registry import FleetRegistry
from agent.controller.spec import RolloutSpec, parse_spec
from agent.controller.state import Assignment, ControllerState, OperatorRequest, RolloutStatus
from agent.core.crash import crash_point
from agent.core.errors import AgentError
from agent.wire.codec import decode, encode
from agent.wire.commands import AnnounceCommand, Target
from agent.wire.errors import ProtocolError
from agent.wire.messages import Ack, Event, Heartbeat, Metrics, Register, UpMessage
from agent.wire.senders import SenderTracker
from agent.wire.signing import Signer
from agent.wire.topics import Topics, group_commands_topic
from agent.wire.transport import Transport, TransportError

log = logging.getLogger("edge_agent.fleet")
TERMINAL = ("succeeded", "rolled_back", "aborted")
# A device that breaks a local guardrail rolls itself back at once; for the fleet that
# is a breach of the rollout as well.
DEVICE_BREACHES = ("guardrail_breach", "local_rollback")
ANNOUNCE_ROLLOUT = "announce"  # the rollout id of discovery commands (not a rollout)
ASK_AGAIN_S = 30.0  # a device heard only by heartbeat is asked to register this often
KEEP_FINISHED = 64  # finished rollouts kept in memory (their figures are in the database)


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
        self.finished: OrderedDict[str, _Running] = OrderedDict()
        self._latest: dict[str, deque[Metrics]] = {}
        self._lock = threading.RLock()
        self.ingested = 0  # fresh messages taken in (duplicates and stale ones are not)
        self.metrics_ingested = 0
        self.ingest_cpu_s = 0.0  # CPU time spent in on_message, on the threads that ran it
        self.invalid = 0
        self._asked: dict[str, float] = {}  # thing -> when it was last asked to register
        self._announce_seq = 0
        self._started_at = time.time()

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
        if isinstance(message, Register):
            self.registry.observe(message)
            self.state.save_registration(message.thing, encode(message))
            self._catch_up(message.thing)
        elif isinstance(message, Heartbeat):
            if not self.registry.observe(message):
                self._ask_to_register(message.thing)
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
        elif isinstance(message, Event) and message.kind in DEVICE_BREACHES:
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

    # ---- discovery ------------------------------------------------------------------------

    def announce(self, groups: list[str]) -> None:
        """Ask every device of ``groups`` to register now (a signed group command)."""
        for group in groups:
            self._publish_announce(Target(kind="group", name=group),
                                   group_commands_topic(self.prefix, group))

    def _ask_to_register(self, thing: str) -> None:
        now = self.clock()
        if now - self._asked.get(thing, -ASK_AGAIN_S) < ASK_AGAIN_S:
            return
        self._asked[thing] = now
        self._publish_announce(Target(kind="thing", name=thing),
                               Topics(thing=thing, prefix=self.prefix).commands)

    def _publish_announce(self, target: Target, topic: str) -> None:
        # Devices admit a rollout's commands in rising rollout_seq: the controller's clock
        # in ms keeps discovery's rising across controller restarts too.
        self._announce_seq = max(self._announce_seq + 1, int(time.time() * 1000))
        command = self.signer.sign(AnnounceCommand(
            target=target, rollout_id=ANNOUNCE_ROLLOUT, rollout_seq=self._announce_seq,
            issued_at=int(time.time() * 1000)))
        try:
            self.transport.publish(topic, encode(command))
        except TransportError as err:
            log.warning("announce to %s not sent: %s", topic, err)

    # ---- operator actions (any thread) ---------------------------------------------------

    def start_rollout(self, spec: RolloutSpec) -> str:
        """Validate, plan and start ``spec``; nothing is recorded unless all of it passes.
        A rollout of this name that this controller runs already is carried on."""
        with self._lock:
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
            record = self.state.start_rollout(rollout_id=spec.name,
                                              spec_json=spec.model_dump_json())
            self.running[record.rollout_id] = _Running(spec, steps, self.clock())
            self.state.log(record.rollout_id, "planned",
                           detail={"steps": [s.name for s in steps]})
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
        with self._lock:
            records = self.state.rollouts(status="running") + self.state.rollouts(
                status="paused")
            for record in records:
                if record.rollout_id in self.running:
                    continue
                spec = parse_spec_json(record.spec_json)
                steps = plan_rollout(spec, self.registry.devices_in(spec.groups))
                run = self.running[record.rollout_id] = _Running(spec, steps, self.clock())
                if record.status == "paused":
                    continue  # waits for the operator
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

    def tick(self) -> list[tuple[OperatorRequest, str]]:
        """Act on the operator's requests, judge every running step; the requests acted
        on, with their effect."""
        handled: list[tuple[OperatorRequest, str]] = []
        with self._lock:
            self.state.controller_alive(os.getpid(), started_at=self._started_at)
            for request in self.state.pending_requests():
                effect = self._act_on(request)
                self.state.handle_request(request.id, effect)
                handled.append((request, effect))
                log.info("request #%d %s %s: %s", request.id, request.action,
                         request.rollout_id, effect)
            for rollout_id, run in list(self.running.items()):
                record = self.state.rollout(rollout_id)
                if record is None or record.status in TERMINAL:
                    self.running.pop(rollout_id, None)
                elif record.status == "running":
                    self._judge(rollout_id, run, record.step_index)
        return handled

    def stop(self) -> None:
        """Say that no controller runs on the database any more (operator commands tell)."""
        self.state.controller_stopped(os.getpid())

    def _act_on(self, request: OperatorRequest) -> str:
        """Carry out one operator request; what it did, in words."""
        rollout_id = request.rollout_id
        if request.action == "start":
            try:
                return f"started {self.start_rollout(parse_spec_json(request.payload))}"
            except (AgentError, ValueError) as err:
                return f"refused: {err}"
        record = self.state.rollout(rollout_id)
        run = self.running.get(rollout_id)
        if record is None or run is None or record.status in TERMINAL:
            status = record.status if record else "unknown"
            return f"refused: {rollout_id} is {status}, not running or paused"
        if request.action == "abort":
            sent = self._roll_back(rollout_id, run, f"by operator (request #{request.id})",
                                  status="aborted")
            return f"rollback sent to {sent} device(s)"
        if request.action == "promote":
            if record.status == "paused":
                self.state.set_status(rollout_id, "running", reason="promoted by operator")
            return self._advance(rollout_id, run)
        if record.status != "paused":
            return f"refused: {rollout_id} is {record.status}, not paused"
        self.state.set_status(rollout_id, "running", reason="resumed by operator")
        run.step_started = self.clock()  # a fresh step timeout
        # Devices that were on another rollout's trial get this step's commands again
        # (their stage and the promote that failed with it), in order.
        held = self.state.assignments(rollout_id, step_index=record.step_index)
        blocked = {a.thing for a in held if a.outcome == "rejected" and a.code == "on_trial"}
        for a in sorted(held, key=lambda a: (a.thing, a.ordinal, a.attempt)):
            if a.thing in blocked and a.outcome == "rejected":
                self._send(self.state.retry(a.command_id))
        retried = sorted(blocked)
        step = run.steps[record.step_index]
        return (f"step {record.step_index + 1} {step.name} judged again for up to "
                f"{run.spec.timing.step_timeout_s:g} s"
                + (f"; stage re-sent to {len(retried)} device(s)" if retried else ""))

    def _judge(self, rollout_id: str, run: _Running, index: int) -> None:
        step = run.steps[index]
        assignments = self.state.assignments(rollout_id, step_index=index)
        problem = _package_problem(run.spec, assignments)
        if problem is not None:
            self._roll_back(rollout_id, run, problem)
            return
        latest: dict[tuple[str, int], Assignment] = {}
        for a in assignments:  # ordered by rollout_seq: a retry comes after its first try
            latest[(a.thing, a.ordinal)] = a
        blocked = [a for a in latest.values() if a.outcome == "rejected" and a.code == "on_trial"]
        if blocked:
            first = blocked[0]
            other = first.ack_data.get("trial_rollout_id", "another rollout")
            more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
            self.state.set_status(rollout_id, "paused", reason=(
                f"step {step.name}: {first.thing}{more} is on trial of "
                f"{first.ack_data.get('model', 'a model')} from rollout {other}, which has "
                f"not confirmed or rolled it back: finish {other}, then resume {rollout_id}"))
            return
        # A device silent for longer than stale_after_s (by this controller's clock) no
        # longer counts: its old reports must not vouch for the step.
        cutoff = self.clock() - run.spec.timing.stale_after_s
        fresh = [r for r in run.reports if run.heard.get(r.thing, 0.0) >= cutoff]
        verdict = evaluate(run.spec.guardrails, fresh, step=step,
                           baseline=run.baseline,
                           installs=self.state.install_outcomes(rollout_id, index))
        run.verdict = verdict
        self._record_verdict(rollout_id, index, run, verdict)
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
            g = run.spec.guardrails
            short = ", ".join(f"{s.where} {s.samples}/{g.min_samples} samples "
                              f"{s.reporting}/{g.min_devices} devices"
                              for s in verdict.scopes if not s.enough) or "every scope"
            self.state.set_status(rollout_id, "paused", reason=(
                f"step {step.name} undecided after {elapsed:.0f} s: not enough data in "
                f"{short}; promote, resume or abort {rollout_id}"))

    def _record_verdict(self, rollout_id: str, index: int, run: _Running,
                        verdict: Verdict) -> None:
        """Keep the figures of each evaluation, for progress lines and the report."""
        worst = [f for f in verdict.scopes if f.green_p99_us is not None]
        agreements = [f.agreement for f in verdict.scopes if f.agreement is not None]
        limits = run.spec.guardrails
        self.state.log(rollout_id, "verdict", step_index=index, detail={
            "status": verdict.status,
            "green_p99_us": max((f.green_p99_us or 0.0 for f in worst), default=None),
            "blue_p99_us": max((f.blue_p99_us for f in worst if f.blue_p99_us is not None),
                               default=None),
            "agreement": min(agreements, default=None),
            "samples": min((f.samples for f in verdict.scopes), default=0),
            "min_samples": limits.min_samples,
            "devices": min((f.reporting for f in verdict.scopes), default=0),
            "min_devices": limits.min_devices,
            "breach": verdict.breach.detail if verdict.breach else None,
            "scopes": [{"where": f.where, "samples": f.samples, "reporting": f.reporting,
                        "green_p99_us": f.green_p99_us, "blue_p99_us": f.blue_p99_us,
                        "error_rate": f.error_rate, "agreement": f.agreement,
                        "enough": f.enough} for f in verdict.scopes]})

    def _advance(self, rollout_id: str, run: _Running) -> str:
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
                self._send(assignment)

    def _succeed(self, rollout_id: str, run: _Running) -> int:
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
                self._send(assignment)
        log.info("rollout %s succeeded: confirm sent to %d device(s)", rollout_id, len(things))
        return len(things)

    def _roll_back(self, rollout_id: str, run: _Running, reason: str, *,
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
            self._send(self.state.decide(planned))
        self.state.set_status(rollout_id, status, reason=reason[:500])
        self._finish(rollout_id, run)
        log.warning("rollout %s %s: %s", rollout_id, status, reason)
        return len(things)

    def _finish(self, rollout_id: str, run: _Running) -> None:
        self.running.pop(rollout_id, None)
        self.finished[rollout_id] = run
        while len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)

    # ---- sending --------------------------------------------------------------------------

    def _send(self, assignment: Assignment) -> None:
        planned: PlannedCommand = assignment.planned
        command = self.signer.sign(build_command(planned, issued_at=int(time.time() * 1000),
                                                 command_id=assignment.command_id,
                                                 attempt=assignment.attempt))
        topic = Topics(thing=assignment.thing, prefix=self.prefix).commands
        # Fire and keep going: QoS 1 with the device's persistent session queues it at
        # the broker while the device is away; unacknowledged ones are re-sent on return.
        self.transport.publish(topic, encode(command))
        crash_point("controller-after-publish")
        self.state.mark_sent(assignment.command_id)


def _package_problem(spec: RolloutSpec, assignments: list[Assignment]) -> str | None:
    """A device acknowledged (or refused) a package that is not the spec's: the label and
    integer version each device reports for its stage, against the spec's."""
    for a in assignments:
        if a.action != "stage" or a.outcome is None:
            continue
        model = a.ack_data.get("model")
        version = a.ack_data.get("package_version")
        expected_version = a.args.get("package_version")
        if a.code == "label_mismatch" or (a.outcome == "ok" and model is not None
                                          and model != spec.model):
            verb = "staged" if a.outcome == "ok" else "was sent"
            return f"device {a.thing} {verb} {model}, the spec expects {spec.model}"
        if a.code == "version_mismatch" or (
                a.outcome == "ok" and version is not None and expected_version is not None
                and version != expected_version):
            return (f"device {a.thing} was sent package version {version} of {model}, the "
                    f"spec expects version {expected_version}")
    return None


def parse_spec_json(text: str) -> RolloutSpec:
    return parse_spec(json.loads(text))
