"""What a rollout's timeline shows, read from the controller's database alone (decisions
log and acknowledged commands), so it works after the fact.

:func:`load_timeline` gathers it as a :class:`Timeline`: the steps, the phases they form
(:func:`phases`), every verdict's figures, the acknowledged commands, the fleet rollback
and the guardrails of the spec. :func:`write_timeline` draws it as a PNG
(:mod:`agent.controller.timeline_png`); only that needs matplotlib (the ``controller``
extra), so this module imports without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.controller.report import TERMINAL_KINDS, StepSpan, rollout_end, step_spans
from agent.controller.state import Assignment, ControllerState, DecisionRecord

PHASE_KINDS = ("shadow", "weighted", "serve", "step", "paused", "rollback")
PHASE_NAMES = {"shadow": "shadow", "weighted": "weighted", "serve": "serve", "step": ""}


@dataclass(frozen=True, kw_only=True)
class Phase:
    kind: str  # one of PHASE_KINDS
    label: str
    start: float
    end: float


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One guardrail verdict's figures, at its time on the timeline's axis."""

    at: float
    step: int | None
    status: str
    green: float | None
    blue: float | None
    agreement: float | None
    samples: int | None
    min_samples: int | None


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """Everything the PNG draws. Times are seconds since the rollout started, except
    :attr:`Verdict.at`, which is already in ``unit`` (``per`` seconds each)."""

    rollout_id: str
    status: str
    reason: str
    t0: float  # the rollout's start (epoch seconds)
    end: float
    unit: str  # s, min or h, by the rollout's length
    per: float
    spans: Sequence[StepSpan]
    phases: Sequence[Phase]
    verdicts: Sequence[Verdict]
    assignments: Sequence[Assignment]
    rollbacks: Sequence[DecisionRecord]
    guardrails: Mapping[str, Any]


def phases(spans: Sequence[StepSpan], decisions: Sequence[DecisionRecord], t0: float,
           end: float) -> list[Phase]:
    """Runs of steps of one mode, then pauses and the fleet rollback (they overlay)."""
    out: list[Phase] = []
    run: list[StepSpan] = []
    for span in [*spans, None]:
        if run and (span is None or span.mode != run[0].mode):
            mode = run[0].mode
            name = PHASE_NAMES.get(mode, mode)
            label = f"{name} step{'s' if len(run) > 1 else ''}" if name else ""
            out.append(Phase(kind=mode if mode in PHASE_KINDS else "step", label=label,
                             start=run[0].start, end=run[-1].end))
            run = []
        if span is not None:
            run.append(span)
    paused_at: float | None = None
    for d in decisions:
        at = d.at - t0
        if d.kind == "paused" and paused_at is None:
            paused_at = at
        elif paused_at is not None and (d.kind in ("running", "step", "rollback",
                                                   *TERMINAL_KINDS) or
                                        (d.kind == "operator" and
                                         (d.detail or {}).get("action") == "resume")):
            out.append(Phase(kind="paused", label="paused", start=paused_at, end=at))
            paused_at = None
    if paused_at is not None:
        out.append(Phase(kind="paused", label="paused", start=paused_at, end=end))
    rollbacks = [d.at - t0 for d in decisions if d.kind == "rollback"]
    if rollbacks:
        out.append(Phase(kind="rollback", label="rollback", start=rollbacks[0], end=end))
    return out


def load_timeline(state: ControllerState, rollout_id: str) -> Timeline:
    """The timeline of ``rollout_id`` as the database holds it now."""
    record = state.rollout(rollout_id)
    if record is None:
        raise ValueError(f"no rollout {rollout_id!r}")
    t0 = record.created_at
    decisions = state.decisions(rollout_id)
    assignments = state.assignments(rollout_id)
    end = rollout_end(record, decisions, assignments)
    spans = step_spans(record, decisions, assignments)
    unit, per = _time_unit(end)
    return Timeline(
        rollout_id=rollout_id, status=record.status, reason=record.reason, t0=t0, end=end,
        unit=unit, per=per, spans=spans, phases=phases(spans, decisions, t0, end),
        verdicts=[_verdict(d, t0, per) for d in decisions if d.kind == "verdict"],
        assignments=assignments, rollbacks=[d for d in decisions if d.kind == "rollback"],
        guardrails=_guardrails(record.spec_json))


def write_timeline(state: ControllerState, rollout_id: str, path: Path) -> Path:
    """Draw the timeline of ``rollout_id`` as a PNG at ``path`` (needs matplotlib)."""
    from agent.controller.timeline_png import draw_timeline

    return draw_timeline(load_timeline(state, rollout_id), path)


def runs(verdicts: Sequence[Verdict],
         test: Callable[[Verdict], bool]) -> list[tuple[float, float]]:
    """(first, last) time of each run of consecutive verdicts passing ``test``."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    previous = 0.0
    for v in verdicts:
        if test(v):
            start = v.at if start is None else start
            previous = v.at
        elif start is not None:
            out.append((start, previous))
            start = None
    if start is not None:
        out.append((start, previous))
    return out


def _verdict(d: DecisionRecord, t0: float, per: float) -> Verdict:
    detail = d.detail or {}

    def number(key: str) -> float | None:
        value = detail.get(key)
        return float(value) if isinstance(value, int | float) \
            and not isinstance(value, bool) else None

    def count(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    return Verdict(at=(d.at - t0) / per, step=d.step_index, status=str(detail.get("status", "")),
                   green=number("green_p99_us"), blue=number("blue_p99_us"),
                   agreement=number("agreement"), samples=count("samples"),
                   min_samples=count("min_samples"))


def _guardrails(spec_json: str) -> Mapping[str, Any]:
    try:
        spec = json.loads(spec_json)
    except ValueError:
        return {}
    rails = spec.get("guardrails") if isinstance(spec, dict) else None
    return rails if isinstance(rails, dict) else {}


def _time_unit(end_s: float) -> tuple[str, float]:
    if end_s <= 900:
        return "s", 1.0
    if end_s <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0
