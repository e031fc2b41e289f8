"""A rollout's report: a JSON file (the rollout, every assignment, every decision) and,
where matplotlib is installed (the ``controller`` extra), a PNG timeline."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

from agent.errors import ConfigError
from agent.fleet.state import ControllerState


def plain(record: object) -> dict[str, object]:
    """A dataclass as JSON-ready fields (read-only mappings become dicts)."""
    return {f.name: dict(v) if isinstance(v := getattr(record, f.name), Mapping) else v
            for f in fields(record)}  # type: ignore[arg-type]


def write_report(state: ControllerState, rollout_id: str, out: Path) -> list[Path]:
    """Write ``<rollout_id>.json`` (and ``.png`` when matplotlib is there) into ``out``."""
    record = state.rollout(rollout_id)
    if record is None:
        raise ConfigError(f"no rollout {rollout_id!r}")
    report = {"rollout": asdict(record),
              "assignments": [plain(a) for a in state.assignments(rollout_id)],
              "decisions": [plain(d) for d in state.decisions(rollout_id)]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rollout_id}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    written = [path]
    try:
        from agent.fleet.timeline import write_timeline
    except ImportError:  # matplotlib is in the controller extra, not on devices
        return written
    written.append(write_timeline(state, rollout_id, out / f"{rollout_id}.png"))
    return written
