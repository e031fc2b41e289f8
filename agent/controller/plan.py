"""Deterministic cohort planning: a spec and a fleet in, the list of steps out.

Same spec and same devices give the same plan, on any controller, after any
restart: devices are ordered by a stable hash of ``spec.name`` and the thing
name, never by arrival or dict order.

Steps, in order::

    shadow                 (optional) the first cohort gets green in shadow mode
                           (and, with ``shadow.capture``, a ``capture`` command)
    canary | linear-i/K | all
                           each cohort switches: stage (unless shadowed), promote
    canary@10, canary@50, canary@100, ...
                           with ``weights``: each cohort's step splits into one
                           step per weight; set_weights below 100, promote at 100

**Step <-> rollout_seq.** Step ``i`` (0-based) owns the seq range
``[(i + 1) * SEQ_STRIDE, (i + 2) * SEQ_STRIDE)``; a device's ``k``-th command of
the step (ordinal ``k``, try ``a``) carries ``base + a * ATTEMPT_STRIDE + k``.
So seqs rise through a rollout as the device's replay guard demands, a retry
after a ``failed`` ack fits in its step, and a metrics report's ``rollout_seq``
(the device's last applied command) names its step: :func:`step_of_seq`. A
rollout ends in the step after the last (index ``len(steps)``) with one command
per device: ``rollback`` (fleet-wide, on a breach or an abort) or ``confirm`` (it
succeeded: the devices end their trial of green). A device never gets both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from agent.controller.errors import PlanError
from agent.controller.registry import Device
from agent.controller.spec import AllAtOnce, Canary, Linear, RolloutSpec
from agent.wire.commands import (
    COMMAND_CLASSES,
    CaptureArgs,
    CaptureRuleArgs,
    Command,
    NoArgs,
    SetWeightsArgs,
    ShadowArgs,
    StageArgs,
    Target,
)
from agent.wire.fields import Schema

SEQ_STRIDE = 1000
ATTEMPT_STRIDE = 10  # up to 10 commands per device per step, up to 100 tries
MAX_ATTEMPTS = SEQ_STRIDE // ATTEMPT_STRIDE

Action = Literal["stage", "shadow", "set_weights", "promote", "rollback", "confirm",
                 "capture"]
FinalAction = Literal["rollback", "confirm"]
StepMode = Literal["shadow", "weighted", "serve", "rollback"]


def seq_base(step_index: int) -> int:
    return (step_index + 1) * SEQ_STRIDE


def command_seq(step_index: int, ordinal: int, attempt: int = 0) -> int:
    if not 0 <= ordinal < ATTEMPT_STRIDE or not 0 <= attempt < MAX_ATTEMPTS:
        raise ValueError(f"ordinal {ordinal} / attempt {attempt} out of the step's seq range")
    return seq_base(step_index) + attempt * ATTEMPT_STRIDE + ordinal


def step_of_seq(rollout_seq: int) -> int:
    """The step whose range holds ``rollout_seq`` (-1 below the first step)."""
    return rollout_seq // SEQ_STRIDE - 1


@dataclass(frozen=True, kw_only=True)
class PlannedCommand:
    """One command for one device; ``args`` are the JSON args of its action."""

    rollout_id: str
    thing: str
    step_index: int
    ordinal: int
    action: Action
    rollout_seq: int
    args: Mapping[str, object]  # scalars; a capture command's ``rules`` is an object


@dataclass(frozen=True, kw_only=True)
class Step:
    index: int
    name: str  # "shadow", "canary", "linear-2/3", "all", "canary@50", ...
    mode: StepMode  # what the commanded devices do after the step's commands
    rollout_id: str
    candidate: str  # green's model label: the model_version of its metrics
    things: tuple[str, ...]  # devices commanded in this step (judged by its guardrails)
    switched: tuple[str, ...]  # devices that first serve green at this step
    cumulative: tuple[str, ...]  # devices serving green (any weight) after this step
    green_weight: int | None  # green's share of traffic after the step (None in shadow)
    sample_rate: float | None  # shadow copy rate
    watch_s: float  # bake / watch time before the next step
    commands: tuple[PlannedCommand, ...]
    hardware_class: Mapping[str, str]  # thing -> class, for this step's things
    groups: Mapping[str, frozenset[str]]  # thing -> targeted groups it is in

    @property
    def seq_range(self) -> range:
        return range(seq_base(self.index), seq_base(self.index + 1))

    def commands_for(self, thing: str) -> tuple[PlannedCommand, ...]:
        return tuple(c for c in self.commands if c.thing == thing)


def rank(rollout_name: str, thing: str) -> str:
    """A device's stable position in a rollout's orderings."""
    return hashlib.sha256(f"{rollout_name}\0{thing}".encode()).hexdigest()


def plan_rollout(spec: RolloutSpec, devices: Iterable[Device], *,
                 rollout_id: str | None = None) -> list[Step]:
    """The steps of ``spec`` over ``devices`` (those outside its groups are ignored)."""
    rid = spec.name if rollout_id is None else rollout_id
    targeted = {d.thing: d for d in devices if d.groups & set(spec.groups)}
    if not targeted:
        raise PlanError(f"no registered device is in groups {spec.groups}")
    for device in targeted.values():
        if device.package_key not in spec.packages:
            raise PlanError(f"no package for {device.describe_key()} ({device.thing})")
    cohorts = _cohorts(spec, targeted)
    builder = _Builder(spec=spec, rollout_id=rid, devices=targeted)
    if spec.shadow is not None:
        builder.shadow(cohorts[0][1], spec.shadow.duration_s, spec.shadow.sample_rate,
                       spec.shadow.capture)
    for name, things, watch_s in cohorts:
        builder.switch(name, things, watch_s)
    return builder.steps


def final_commands(steps: Sequence[Step], things: Iterable[str], action: FinalAction, *,
                   attempt: int = 0) -> list[PlannedCommand]:
    """How the rollout ends for ``things``: one ``rollback`` or ``confirm`` command per
    thing, in the step after the last."""
    index = len(steps)
    rid = steps[0].rollout_id if steps else ""
    return [PlannedCommand(rollout_id=rid, thing=thing, step_index=index, ordinal=0,
                           action=action, rollout_seq=command_seq(index, 0, attempt),
                           args=MappingProxyType({}))
            for thing in sorted(set(things))]


def rollback_commands(steps: Sequence[Step], things: Iterable[str], *,
                      attempt: int = 0) -> list[PlannedCommand]:
    """The fleet-wide rollback: one command per thing in the step after the last."""
    return final_commands(steps, things, "rollback", attempt=attempt)


def build_command(planned: PlannedCommand, *, issued_at: int,
                  command_id: str | None = None, attempt: int = 0) -> Command:
    """The wire command (unsigned) for a planned one; ``attempt`` moves it up its step's
    seq range for a retry after a ``failed`` ack (use a new ``command_id`` then)."""
    args = dict(planned.args)
    arg_models: dict[str, type[Schema]] = {
        "stage": StageArgs, "shadow": ShadowArgs, "set_weights": SetWeightsArgs,
        "promote": NoArgs, "rollback": NoArgs, "confirm": NoArgs, "capture": CaptureArgs}
    arg_model = arg_models[planned.action]
    fields: dict[str, object] = {
        "target": Target(kind="thing", name=planned.thing), "rollout_id": planned.rollout_id,
        "rollout_seq": command_seq(planned.step_index, planned.ordinal, attempt),
        "args": arg_model.model_validate(args), "issued_at": issued_at}
    if command_id is not None:
        fields["command_id"] = command_id
    return COMMAND_CLASSES[planned.action](**fields)  # type: ignore[arg-type]


# ---- cohorts -------------------------------------------------------------------------


Cohort = tuple[str, list[str], float]  # name, things, watch_s


def _cohorts(spec: RolloutSpec, devices: Mapping[str, Device]) -> list[Cohort]:
    ordered = _spread(spec.name, devices, sorted(devices))
    strategy = spec.strategy
    if isinstance(strategy, AllAtOnce):
        return [("all", ordered, strategy.watch_s)]
    if isinstance(strategy, Linear):
        return _linear(ordered, strategy.steps, strategy.step_interval_s)
    assert isinstance(strategy, Canary)
    canary = _canary(spec, strategy, devices)
    if not canary:
        raise PlanError(f"canary group {strategy.group!r} has no registered device")
    rest = [thing for thing in ordered if thing not in set(canary)]
    cohorts: list[Cohort] = [("canary", canary, strategy.bake_s)]
    if not rest:
        return cohorts
    if strategy.then == "linear":
        assert strategy.linear_steps is not None
        return cohorts + _linear(rest, strategy.linear_steps, strategy.later_watch_s)
    return [*cohorts, ("all", rest, strategy.later_watch_s)]


def _linear(ordered: list[str], steps: int, watch_s: float) -> list[Cohort]:
    count = min(steps, len(ordered))  # never an empty step
    size, extra = divmod(len(ordered), count)
    cohorts: list[Cohort] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        cohorts.append((f"linear-{i + 1}/{count}", ordered[start:end], watch_s))
        start = end
    return cohorts


def _spread(name: str, devices: Mapping[str, Device], things: Iterable[str]) -> list[str]:
    """Things ordered so each hardware class is spread evenly along the order."""
    by_class: dict[str, list[str]] = {}
    for thing in things:
        by_class.setdefault(devices[thing].hardware_class, []).append(thing)
    keyed = []
    for cls, members in by_class.items():
        members.sort(key=lambda t: rank(name, t))
        keyed += [((i + 0.5) / len(members), cls, t) for i, t in enumerate(members)]
    return [t for _, _, t in sorted(keyed)]


def _canary(spec: RolloutSpec, strategy: Canary, devices: Mapping[str, Device]) -> list[str]:
    if strategy.group is not None:
        members = [t for t in sorted(devices) if strategy.group in devices[t].groups]
        return _spread(spec.name, devices, members)
    assert strategy.percent is not None
    chosen: list[str] = []
    for group in spec.groups:
        members = [t for t in sorted(devices) if group in devices[t].groups]
        quota = max(1, math.ceil(strategy.percent * len(members) / 100 - 1e-9)) if members else 0
        while sum(t in chosen for t in members) < quota:
            chosen.append(_next_pick(spec.name, devices, members, chosen))
    return chosen


def _next_pick(name: str, devices: Mapping[str, Device], members: list[str],
               chosen: list[str]) -> str:
    """The least-ranked unchosen member of the class with the fewest chosen members."""
    counts: dict[str, int] = {}
    free: dict[str, list[str]] = {}
    for thing in members:
        cls = devices[thing].hardware_class
        counts.setdefault(cls, 0)
        if thing in chosen:
            counts[cls] += 1
        else:
            free.setdefault(cls, []).append(thing)
    cls = min(free, key=lambda c: (counts[c], c))
    return min(free[cls], key=lambda t: rank(name, t))


# ---- steps ---------------------------------------------------------------------------


class _Builder:
    def __init__(self, *, spec: RolloutSpec, rollout_id: str,
                 devices: Mapping[str, Device]) -> None:
        self.spec, self.rollout_id, self.devices = spec, rollout_id, devices
        self.steps: list[Step] = []
        self.staged: set[str] = set()
        self.serving: list[str] = []

    def shadow(self, things: list[str], watch_s: float, sample_rate: float,
               capture: CaptureRuleArgs | None = None) -> None:
        index = len(self.steps)
        commands: list[PlannedCommand] = []
        for thing in things:
            commands.append(self._stage(index, thing))
            commands.append(self._command(index, thing, 1, "shadow",
                                          {"sample_rate": sample_rate}))
            if capture is not None:
                commands.append(self._command(index, thing, 2, "capture", {
                    "enabled": True, "rules": capture.model_dump(mode="json")}))
        self.staged.update(things)
        self._add(name="shadow", mode="shadow", things=things, switched=[], weight=None,
                  sample_rate=sample_rate, watch_s=watch_s, commands=commands)

    def switch(self, name: str, things: list[str], watch_s: float) -> None:
        ramp = self.spec.weights or [100]
        for j, weight in enumerate(ramp):
            index = len(self.steps)
            commands: list[PlannedCommand] = []
            for thing in things:
                ordinal = 0
                if j == 0 and thing not in self.staged:
                    commands.append(self._stage(index, thing))
                    ordinal = 1
                if weight == 100:
                    commands.append(self._command(index, thing, ordinal, "promote", {}))
                else:
                    commands.append(self._command(index, thing, ordinal, "set_weights",
                                                  {"blue": 100 - weight, "green": weight}))
            if j == 0:
                self.staged.update(things)
                self.serving += things
            self._add(name=name if len(ramp) == 1 else f"{name}@{weight}",
                      mode="serve" if weight == 100 else "weighted", things=things,
                      switched=things if j == 0 else [], weight=weight, sample_rate=None,
                      watch_s=watch_s, commands=commands)

    def _stage(self, index: int, thing: str) -> PlannedCommand:
        package = self.spec.packages[self.devices[thing].package_key]
        # ``version`` names the build the device should end up reporting (the label its
        # metrics carry), which is what the guardrails look for; the package's integer
        # version is checked on the device against the signed manifest's floor.
        return self._command(index, thing, 0, "stage", {
            "url": package.url, "sha256": package.sha256, "version": self.spec.model,
            "package_version": package.version})

    def _command(self, index: int, thing: str, ordinal: int, action: Action,
                 args: dict[str, object]) -> PlannedCommand:
        return PlannedCommand(rollout_id=self.rollout_id, thing=thing, step_index=index,
                              ordinal=ordinal, action=action,
                              rollout_seq=command_seq(index, ordinal),
                              args=MappingProxyType(args))

    def _add(self, *, name: str, mode: StepMode, things: list[str], switched: list[str],
             weight: int | None, sample_rate: float | None, watch_s: float,
             commands: list[PlannedCommand]) -> None:
        targeted = set(self.spec.groups)
        self.steps.append(Step(
            index=len(self.steps), name=name, mode=mode, rollout_id=self.rollout_id,
            candidate=self.spec.model, things=tuple(things), switched=tuple(switched),
            cumulative=tuple(self.serving), green_weight=weight, sample_rate=sample_rate,
            watch_s=watch_s, commands=tuple(commands),
            hardware_class=MappingProxyType(
                {t: self.devices[t].hardware_class for t in things}),
            groups=MappingProxyType({t: self.devices[t].groups & targeted for t in things})))
