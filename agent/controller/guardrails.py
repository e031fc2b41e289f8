"""Fleet guardrails: one verdict for a step from its devices' metrics reports.

**Which reports count.** A variant's figures count for step ``i`` only when they
carry the step's ``rollout_id`` and a ``rollout_seq`` in step ``i``'s range
(:func:`agent.controller.plan.step_of_seq`): the device has applied a command of
this step. A report still at an earlier step's seq, of another rollout or of a
device outside the step is ignored. Reports must already be de-duplicated
(``SenderTracker``).

**Green and blue** are told apart by model, not by variant name: green is the
variant whose ``model_version`` is the step's candidate (after a promote the
candidate reports as ``blue``). Blue's reference is the concurrent blue of the
same devices (shadow and weighted steps); when there is none (after a promote)
it is ``baseline``: the same devices' reports from before they switched.

**Windows, never averaged percentiles.** Per device, boot, role and series,
the earliest and latest counted report are diffed (``diff_counts``): a device
contributes from its second counted report on. The windows are merged across
devices (``merge_counts``) per hardware class and per group, and p99 comes from
the merged histogram (``quantiles_of``).

**Agreement.** Metrics carry no shadow agreement yet. If green's
``VariantMetrics`` gains cumulative ``agreed_total`` / ``compared_total`` they
are used (windowed and summed like the rest); otherwise the proxy is
``1 - max(0, blue top-1 accuracy - green top-1 accuracy)`` from
``checked_total`` / ``correct_total``, when both variants checked labels. With
``agreement_with: labels`` it is green's own labelled accuracy instead.

**Accuracy gain.** With ``min_accuracy_gain`` set, a scope whose green labelled
accuracy does not beat blue's by that much (or where either is unknown) is *held*
(``ScopeFigures.held`` says why): it counts as short, so the step cannot pass.

**Verdict.** Every hardware class and every group of the step is judged.
Latency, error and agreement rules need ``min_samples`` green inferences and
``min_devices`` reporting devices in the scope; health (temperature, RSS of
each device's latest report) and install failures (share of devices tried,
once ``install_failure_min_devices`` were tried) do not. Any breach makes the
verdict ``breach``; else any scope short of data makes it ``insufficient``;
else ``pass``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.controller.plan import Step, step_of_seq
from agent.controller.spec import GuardrailSpec
from agent.core.histogram import diff_counts, merge_counts, quantiles_of
from agent.wire.messages import Metrics, VariantMetrics

Role = Literal["green", "blue"]
VerdictStatus = Literal["pass", "breach", "insufficient"]


@dataclass(frozen=True, kw_only=True)
class Breach:
    rule: str  # p99, p99_ratio, error_rate, agreement, soc_temperature, rss, install_failures
    where: str  # "class:rasp4b", "group:kitchen", or "device:pi-01" for health
    detail: str
    observed: float
    limit: float


@dataclass(frozen=True, kw_only=True)
class ScopeFigures:
    where: str
    things: tuple[str, ...]
    reporting: int  # devices with a green window
    samples: int  # green inferences in the merged window
    green_p99_us: float | None
    blue_p99_us: float | None
    error_rate: float | None
    agreement: float | None
    enough: bool
    green_accuracy: float | None = None  # top-1 on the labelled checks
    blue_accuracy: float | None = None
    held: str = ""  # a promotion condition not met yet (min_accuracy_gain)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    status: VerdictStatus
    breaches: tuple[Breach, ...] = ()
    short: tuple[str, ...] = ()  # scopes without enough samples or devices
    scopes: tuple[ScopeFigures, ...] = ()

    @property
    def breach(self) -> Breach | None:
        return self.breaches[0] if self.breaches else None


@dataclass(kw_only=True)
class _Window:
    version: str
    counts: list[int]
    errors: int = 0
    checked: int = 0
    correct: int = 0
    agreed: int = 0
    compared: int = 0

    @property
    def inferences(self) -> int:
        return sum(self.counts)

    def add(self, other: _Window) -> None:
        self.counts = merge_counts([self.counts, other.counts])
        self.errors += other.errors
        self.checked += other.checked
        self.correct += other.correct
        self.agreed += other.agreed
        self.compared += other.compared


@dataclass(kw_only=True)
class _Windows:
    """Per (thing, role): the sum of its series' windows."""

    by_device: dict[tuple[str, Role], _Window] = field(default_factory=dict)

    def merged(self, things: Iterable[str], role: Role) -> tuple[_Window | None, int]:
        total: _Window | None = None
        devices = 0
        for thing in things:
            window = self.by_device.get((thing, role))
            if window is None:
                continue
            devices += 1
            if total is None:
                total = _Window(version=window.version, counts=[0] * len(window.counts))
            if window.version == total.version:
                total.add(window)
        return total, devices


def counted_reports(reports: Iterable[Metrics], step: Step) -> list[Metrics]:
    """The reports whose variants all belong to ``step`` (see the module docstring)."""
    things = set(step.things)
    return [r for r in reports if r.thing in things and r.variants
            and all(_in_step(vm, step) for vm in r.variants.values())]


def evaluate(guardrails: GuardrailSpec, reports: Iterable[Metrics], *, step: Step,
             baseline: Sequence[Metrics] = (),
             installs: Mapping[str, bool] | None = None) -> Verdict:
    """Judge ``step``; ``installs`` maps each thing tried to whether its stage succeeded."""
    counted = counted_reports(reports, step)
    windows = _windows(counted, step.candidate)
    before = _windows([r for r in baseline if r.thing in set(step.things)], step.candidate)
    breaches: list[Breach] = _health(guardrails, counted)
    short: list[str] = []
    scopes: list[ScopeFigures] = []
    for where, things in _scopes(step):
        figures, found = _judge(guardrails, where, things, windows, before)
        scopes.append(figures)
        breaches += found
        breaches += _installs(guardrails, where, things, installs or {})
        if not figures.enough or figures.held:
            short.append(where)
    if breaches:
        return Verdict(status="breach", breaches=tuple(breaches), short=tuple(short),
                       scopes=tuple(scopes))
    return Verdict(status="insufficient" if short else "pass", short=tuple(short),
                   scopes=tuple(scopes))


def _in_step(vm: VariantMetrics, step: Step) -> bool:
    return (vm.rollout_id == step.rollout_id and vm.rollout_seq is not None
            and step_of_seq(vm.rollout_seq) == step.index)


def _scopes(step: Step) -> list[tuple[str, tuple[str, ...]]]:
    classes = sorted(set(step.hardware_class.values()))
    groups = sorted(set().union(*step.groups.values())) if step.groups else []
    return ([(f"class:{c}", tuple(t for t in step.things if step.hardware_class[t] == c))
             for c in classes]
            + [(f"group:{g}", tuple(t for t in step.things if g in step.groups[t]))
               for g in groups])


def _windows(reports: Sequence[Metrics], candidate: str) -> _Windows:
    first: dict[tuple[str, str, Role, int, str], tuple[int, VariantMetrics]] = {}
    last: dict[tuple[str, str, Role, int, str], tuple[int, VariantMetrics]] = {}
    for report in reports:
        for vm in report.variants.values():
            role: Role = "green" if vm.model_version == candidate else "blue"
            key = (report.thing, report.boot_id, role, vm.series, vm.buckets.version)
            if key not in first or report.seq < first[key][0]:
                first[key] = (report.seq, vm)
            if key not in last or report.seq > last[key][0]:
                last[key] = (report.seq, vm)
    out = _Windows()
    for key, (_, start) in sorted(first.items()):
        end = last[key][1]
        try:
            counts = diff_counts(start.buckets.counts, end.buckets.counts)
        except ValueError:
            continue  # not one series after all: judge nothing from it
        window = _Window(
            version=start.buckets.version, counts=counts,
            errors=max(end.errors_total - start.errors_total, 0),
            checked=max(end.checked_total - start.checked_total, 0),
            correct=max(end.correct_total - start.correct_total, 0),
            agreed=max(_extra(end, "agreed_total") - _extra(start, "agreed_total"), 0),
            compared=max(_extra(end, "compared_total") - _extra(start, "compared_total"), 0))
        thing, role = key[0], key[2]
        held = out.by_device.get((thing, role))
        if held is None:
            out.by_device[(thing, role)] = window
        elif held.version == window.version:
            held.add(window)
    return out


def _extra(vm: VariantMetrics, name: str) -> int:
    """A cumulative counter the schema may gain later (0 while it is absent)."""
    value = getattr(vm, name, None)
    return value if isinstance(value, int) else 0


def _p99(window: _Window | None) -> float | None:
    if window is None or not window.inferences:
        return None
    return quantiles_of(window.counts, (0.99,), version=window.version)[0]


def _judge(limits: GuardrailSpec, where: str, things: tuple[str, ...], windows: _Windows,
           before: _Windows) -> tuple[ScopeFigures, list[Breach]]:
    green, reporting = windows.merged(things, "green")
    blue, _ = windows.merged(things, "blue")
    if blue is None or not blue.inferences:
        blue, _ = before.merged(things, "blue")
    samples = green.inferences if green is not None else 0
    enough = samples >= limits.min_samples and reporting >= limits.min_devices
    green_p99, blue_p99 = _p99(green), _p99(blue)
    error_rate = agreement = None
    if green is not None and samples + green.errors:
        error_rate = green.errors / (samples + green.errors)
    green_accuracy = green.correct / green.checked if green and green.checked else None
    blue_accuracy = blue.correct / blue.checked if blue and blue.checked else None
    if limits.agreement_with == "labels":
        agreement = green_accuracy
    elif green is not None and green.compared:
        agreement = green.agreed / green.compared
    elif green is not None and green.checked and blue is not None and blue.checked:
        agreement = 1.0 - max(0.0, blue.correct / blue.checked - green.correct / green.checked)
    figures = ScopeFigures(where=where, things=things, reporting=reporting, samples=samples,
                           green_p99_us=green_p99, blue_p99_us=blue_p99, error_rate=error_rate,
                           agreement=agreement, enough=enough,
                           green_accuracy=green_accuracy, blue_accuracy=blue_accuracy,
                           held=_gain_held(limits, green_accuracy, blue_accuracy))
    if not enough:
        return figures, []
    found: list[Breach] = []
    if limits.max_p99_us is not None and green_p99 is not None \
            and green_p99 > limits.max_p99_us:
        found.append(Breach(rule="p99", where=where, observed=green_p99,
                            limit=limits.max_p99_us,
                            detail=f"green p99 {green_p99:.0f} us over {limits.max_p99_us:g} us"))
    if limits.max_p99_ratio is not None and green_p99 is not None and blue_p99:
        ratio = green_p99 / blue_p99
        if ratio > limits.max_p99_ratio and green_p99 - blue_p99 > limits.min_p99_excess_us:
            found.append(Breach(rule="p99_ratio", where=where, observed=ratio,
                                limit=limits.max_p99_ratio,
                                detail=f"green p99 {green_p99:.0f} us is {ratio:.2f}x blue's "
                                       f"{blue_p99:.0f} us (limit {limits.max_p99_ratio:g}x, "
                                       f"{limits.min_p99_excess_us:g} us over)"))
    if limits.max_error_rate is not None and error_rate is not None \
            and error_rate > limits.max_error_rate:
        found.append(Breach(rule="error_rate", where=where, observed=error_rate,
                            limit=limits.max_error_rate,
                            detail=f"green error rate {error_rate:.4f} over "
                                   f"{limits.max_error_rate:g}"))
    if limits.min_agreement is not None and agreement is not None \
            and agreement < limits.min_agreement:
        found.append(Breach(rule="agreement", where=where, observed=agreement,
                            limit=limits.min_agreement,
                            detail=f"agreement {agreement:.3f} under {limits.min_agreement:g}"))
    return figures, found


def _gain_held(limits: GuardrailSpec, green: float | None, blue: float | None) -> str:
    """Why ``min_accuracy_gain`` holds the scope ("" when it does not)."""
    gain = limits.min_accuracy_gain
    if gain is None:
        return ""
    if green is None or blue is None:
        return (f"accuracy gain unknown (green {_pct(green)}, blue {_pct(blue)} on "
                f"labelled checks; needs {gain:+g})")
    if green - blue < gain:
        return (f"accuracy gain {green - blue:+.3f} (green {green:.3f}, blue {blue:.3f}) "
                f"under {gain:+g}")
    return ""


def _pct(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _health(limits: GuardrailSpec, reports: Sequence[Metrics]) -> list[Breach]:
    latest: dict[str, Metrics] = {}
    for report in reports:
        if report.thing not in latest or report.seq > latest[report.thing].seq:
            latest[report.thing] = report
    found: list[Breach] = []
    for thing, report in sorted(latest.items()):
        health = report.health
        if health is None:
            continue
        if limits.max_soc_temp_c is not None and health.soc_temp_c is not None \
                and health.soc_temp_c > limits.max_soc_temp_c:
            found.append(Breach(rule="soc_temperature", where=f"device:{thing}",
                                observed=health.soc_temp_c, limit=limits.max_soc_temp_c,
                                detail=f"SoC at {health.soc_temp_c:.1f} C, limit "
                                       f"{limits.max_soc_temp_c:g} C"))
        if limits.max_rss_bytes is not None and health.rss_bytes is not None \
                and health.rss_bytes > limits.max_rss_bytes:
            found.append(Breach(rule="rss", where=f"device:{thing}",
                                observed=float(health.rss_bytes),
                                limit=float(limits.max_rss_bytes),
                                detail=f"agent RSS {health.rss_bytes} B over "
                                       f"{limits.max_rss_bytes} B"))
    return found


def _installs(limits: GuardrailSpec, where: str, things: tuple[str, ...],
              installs: Mapping[str, bool]) -> list[Breach]:
    if limits.install_failure_pct is None:
        return []
    tried = [t for t in things if t in installs]
    if len(tried) < limits.install_failure_min_devices:
        return []
    failed = sum(not installs[t] for t in tried)
    pct = 100.0 * failed / len(tried)
    if pct <= limits.install_failure_pct:
        return []
    return [Breach(rule="install_failures", where=where, observed=pct,
                   limit=limits.install_failure_pct,
                   detail=f"{failed} of {len(tried)} installs failed ({pct:.0f}%, limit "
                          f"{limits.install_failure_pct:g}%)")]
