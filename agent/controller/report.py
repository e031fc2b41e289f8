"""A rollout's report: a JSON file and, where matplotlib is installed (the ``controller``
extra), a PNG timeline (:mod:`agent.controller.timeline`). Both come from the controller's
database alone, so a report can be written at any time, also after the fact.

The JSON holds:

* ``rollout``: the rollout's record, its spec as an object under ``spec``;
* ``steps``: one entry per step begun: index, name, mode (``shadow``, ``weighted``,
  ``serve``; inferred from the step's commands where the database predates the mode),
  green weight, sample rate, watch, devices and the seconds since the rollout started;
* ``verdicts``: one entry per guardrail evaluation: its time, step, status and
  figures (p99s, agreement, the fewest green samples and reporting devices over the
  step's scopes against ``min_samples`` / ``min_devices``, and each scope's figures).
  A figure the controller did not record (an older database) is ``null``;
* ``assignments`` and ``decisions``: every command decided and every decision logged.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from agent.controller.state import Assignment, ControllerState, DecisionRecord, RolloutRecord
from agent.core.errors import ConfigError

TERMINAL_KINDS = ("succeeded", "rolled_back", "aborted")
# The figures of a verdict decision, in the order the report lists them.
VERDICT_FIGURES = ("status", "green_p99_us", "blue_p99_us", "agreement", "samples",
                   "min_samples", "devices", "min_devices")
MODE_OF_ACTION = {"shadow": "shadow", "set_weights": "weighted", "promote": "serve"}


@dataclass(frozen=True, kw_only=True)
class StepSpan:
    """One step as it ran: from its ``step`` decision to the next step (or the end)."""

    index: int
    name: str
    mode: str  # shadow, weighted, serve; "step" where neither detail nor commands say
    green_weight: int | None
    sample_rate: float | None
    watch_s: float | None
    devices: int | None
    start: float  # seconds since the rollout started
    end: float


def plain(record: object) -> dict[str, object]:
    """A dataclass as JSON-ready fields (read-only mappings become dicts)."""
    return {f.name: dict(v) if isinstance(v := getattr(record, f.name), Mapping) else v
            for f in fields(record)}  # type: ignore[arg-type]


def rollout_json(record: RolloutRecord) -> dict[str, Any]:
    """The record with its spec as an object (``spec``) instead of escaped JSON."""
    out: dict[str, Any] = asdict(record)
    text = out.pop("spec_json")
    try:
        out["spec"] = json.loads(text)
    except ValueError:
        out["spec_json"] = text  # not JSON after all: keep it as it is stored
    return out


def rollout_end(record: RolloutRecord, decisions: Sequence[DecisionRecord],
                assignments: Iterable[Assignment]) -> float:
    """Seconds from the rollout's start to the last thing it recorded (at least 1)."""
    times = [record.updated_at, *(d.at for d in decisions),
             *(a.acked_at for a in assignments if a.acked_at is not None)]
    return max(max(times) - record.created_at, 1.0)


def step_spans(record: RolloutRecord, decisions: Sequence[DecisionRecord],
               assignments: Sequence[Assignment]) -> list[StepSpan]:
    """The steps begun, in order. Both ``set_step`` and the controller log a ``step``
    decision for a step: the first gives the start, any with a detail the details."""
    t0 = record.created_at
    start: dict[int, float] = {}
    detail: dict[int, Mapping[str, Any]] = {}
    for d in decisions:
        if d.kind != "step" or d.step_index is None:
            continue
        start.setdefault(d.step_index, d.at - t0)
        if d.detail and d.step_index not in detail:
            detail[d.step_index] = d.detail
    actions: dict[int, set[str]] = {}
    for a in assignments:
        actions.setdefault(a.step_index, set()).add(a.action)
    ends = _stops(decisions, t0)
    end_of_all = rollout_end(record, decisions, assignments)
    spans = []
    order = sorted(start, key=lambda i: (start[i], i))
    for n, index in enumerate(order):
        info = detail.get(index, {})
        later = [start[i] for i in order[n + 1:]] + [t for t in ends if t >= start[index]]
        spans.append(StepSpan(
            index=index, name=str(info.get("name") or f"step {index}"),
            mode=str(info.get("mode") or _mode_of(actions.get(index, set()))),
            green_weight=_int(info.get("green_weight")),
            sample_rate=_float(info.get("sample_rate")), watch_s=_float(info.get("watch_s")),
            devices=_int(info.get("devices")),
            start=start[index], end=min(later, default=end_of_all)))
    return spans


def verdicts(record: RolloutRecord, decisions: Iterable[DecisionRecord],
             names: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """One entry per ``verdict`` decision (see the module docstring)."""
    out = []
    for d in decisions:
        if d.kind != "verdict":
            continue
        detail = dict(d.detail or {})
        entry: dict[str, Any] = {
            "at": d.at, "t_s": round(d.at - record.created_at, 3), "step_index": d.step_index,
            "step": (names or {}).get(d.step_index) if d.step_index is not None else None}
        entry.update({key: detail.pop(key, None) for key in VERDICT_FIGURES})
        entry["scopes"] = detail.pop("scopes", [])
        entry.update(detail)  # whatever a newer controller adds
        out.append(entry)
    return out


def build_report(state: ControllerState, rollout_id: str) -> dict[str, Any]:
    """The report's content (what :func:`write_report` writes as JSON)."""
    record = state.rollout(rollout_id)
    if record is None:
        raise ConfigError(f"no rollout {rollout_id!r}")
    assignments = state.assignments(rollout_id)
    decisions = state.decisions(rollout_id)
    spans = step_spans(record, decisions, assignments)
    return {"rollout": rollout_json(record),
            "steps": [_step_json(s) for s in spans],
            "verdicts": verdicts(record, decisions, {s.index: s.name for s in spans}),
            "assignments": [plain(a) for a in assignments],
            "decisions": [plain(d) for d in decisions]}


def write_report(state: ControllerState, rollout_id: str, out: Path) -> list[Path]:
    """Write ``<rollout_id>.json`` (and ``.png`` when matplotlib is there) into ``out``."""
    report = build_report(state, rollout_id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rollout_id}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    written = [path]
    if not has_matplotlib():
        return written
    from agent.controller.timeline import write_timeline

    written.append(write_timeline(state, rollout_id, out / f"{rollout_id}.png"))
    return written


def has_matplotlib() -> bool:
    """Whether the PNG can be drawn: matplotlib is in the controller extra, not on devices."""
    return importlib.util.find_spec("matplotlib") is not None


def _step_json(span: StepSpan) -> dict[str, Any]:
    out = asdict(span)
    out["start_s"], out["end_s"] = round(out.pop("start"), 3), round(out.pop("end"), 3)
    return out


def _stops(decisions: Iterable[DecisionRecord], t0: float) -> list[float]:
    """When stepping stopped: a fleet rollback begun, or the rollout ended."""
    return [d.at - t0 for d in decisions if d.kind in ("rollback", *TERMINAL_KINDS)]


def _mode_of(actions: set[str]) -> str:
    # A database from before step details: the step's own commands say what it did.
    for action in ("shadow", "set_weights", "promote"):
        if action in actions:
            return MODE_OF_ACTION[action]
    return "step"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
