"""The metrics reports of one rollout, kept so that a step's verdict reads only what
it needs and each report is looked at once.

:func:`agent.controller.guardrails.evaluate` reads, of the reports counted for a
step, per device and window key (boot, role, series, bucket layout) the first and
the last report by ``seq``, and per device the newest report (its health). Of
reports with the same ``seq`` it takes the first to arrive. :class:`StepReports`
keeps, per step and device, exactly those reports (keyed by model version rather
than role, which is finer and so keeps at least the ones the guardrails read)
and hands them over in arrival order: the verdict over them is the verdict over
every report the rollout received.

A report counts for the step its variants' ``rollout_seq`` falls in, when every
variant carries this rollout's id and that step's seq and the device is one of
the step's (the rule of :func:`agent.controller.guardrails.counted_reports`); any
other report counts for no step and is not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.controller.plan import Step, step_of_seq
from agent.wire.messages import Metrics

FOLD_AT = 4096  # new reports held before they are sorted in, between two verdicts

_WindowKey = tuple[str, str, int, str]  # boot_id, model_version, series, buckets.version


@dataclass(frozen=True)
class _Kept:
    seq: int
    arrival: int
    report: Metrics


@dataclass
class _DeviceReports:
    """One device's reports that a verdict of one step reads."""

    windows: dict[_WindowKey, tuple[_Kept, _Kept]] = field(default_factory=dict)
    newest: _Kept | None = None

    def add(self, kept: _Kept) -> None:
        report = kept.report
        for vm in report.variants.values():
            key = (report.boot_id, vm.model_version, vm.series, vm.buckets.version)
            held = self.windows.get(key)
            if held is None:
                self.windows[key] = (kept, kept)
                continue
            first, last = held
            self.windows[key] = (kept if kept.seq < first.seq else first,
                                 kept if kept.seq > last.seq else last)
        if self.newest is None or kept.seq > self.newest.seq:
            self.newest = kept

    def kept(self) -> Iterable[_Kept]:
        for first, last in self.windows.values():
            yield first
            yield last
        if self.newest is not None:
            yield self.newest


class StepReports:
    """The reports of one rollout's steps; not thread-safe (the controller's lock)."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self._steps = {step.index: step for step in steps}
        self._things = {step.index: frozenset(step.things) for step in self._steps.values()}
        self._new: list[Metrics] = []
        self._arrivals = 0
        self._devices: dict[int, dict[str, _DeviceReports]] = {}

    def add(self, report: Metrics) -> None:
        """Take in a fresh report (de-duplicated already); sorted in at the next read."""
        self._new.append(report)
        if len(self._new) >= FOLD_AT:
            self._fold()

    def for_step(self, step: Step, fresh: Callable[[str], bool]) -> list[Metrics]:
        """The reports a verdict of ``step`` reads, of the devices ``fresh`` admits, in
        the order they arrived."""
        self._fold()
        kept: dict[int, Metrics] = {}
        for thing, device in self._devices.get(step.index, {}).items():
            if fresh(thing):
                kept.update((k.arrival, k.report) for k in device.kept())
        return [kept[arrival] for arrival in sorted(kept)]

    def _fold(self) -> None:
        for report in self._new:
            arrival, self._arrivals = self._arrivals, self._arrivals + 1
            index = self._step_of(report)
            if index is not None:
                self._devices.setdefault(index, {}).setdefault(
                    report.thing, _DeviceReports()).add(_Kept(report.seq, arrival, report))
        self._new.clear()

    def _step_of(self, report: Metrics) -> int | None:
        """The index of the step ``report`` counts for, if any."""
        if not report.variants:
            return None
        first = next(iter(report.variants.values()))
        if first.rollout_seq is None:
            return None
        index = step_of_seq(first.rollout_seq)
        step = self._steps.get(index)
        if step is None or report.thing not in self._things[index]:
            return None
        for vm in report.variants.values():
            if vm.rollout_id != step.rollout_id or vm.rollout_seq is None \
                    or step_of_seq(vm.rollout_seq) != index:
                return None
        return index
