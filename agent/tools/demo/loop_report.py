"""The loop demo's results: the before/after accuracy table, its PNG and ``summary.json``.

The table has one row per model and one column per data set: the original test split,
the held-out shifted set (never captured, never trained on: the fair measure) and what
the devices measured on the field stream during the shadow phase (the labelled checks of
blue and green on the same inputs; the stream includes inputs v3 was trained on, so it
flatters v3 and is shown for what the rollout judged, not as the held-out figure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.controller.state import ControllerState
from agent.tools.demo.loop_options import V1_LABEL, V3_LABEL


@dataclass(frozen=True)
class Accuracies:
    original_test: float
    shifted_heldout: float
    field_shadow: float | None  # on the devices, during the shadow phase


@dataclass
class LoopFigures:
    """Everything the narrative, the table and summary.json report."""

    v1: Accuracies | None = None
    v3: Accuracies | None = None
    stages: dict[str, Any] = field(default_factory=dict)  # per stage, its numbers

    @property
    def gain(self) -> float | None:
        if self.v1 is None or self.v3 is None:
            return None
        return self.v3.shifted_heldout - self.v1.shifted_heldout


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def accuracy_table(figures: LoopFigures) -> str:
    rows = [("model", "original test", "shifted, held out", "field (shadow, devices)")]
    for label, acc in ((V1_LABEL, figures.v1), (V3_LABEL, figures.v3)):
        if acc is not None:
            rows.append((label, _pct(acc.original_test), _pct(acc.shifted_heldout),
                         _pct(acc.field_shadow)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_png(figures: LoopFigures, path: Path) -> Path | None:
    """A grouped bar chart of the table; None when matplotlib is not installed."""
    if figures.v1 is None or figures.v3 is None:
        return None
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = ["original test", "shifted, held out", "field (shadow)"]
    v1 = [figures.v1.original_test, figures.v1.shifted_heldout, figures.v1.field_shadow]
    v3 = [figures.v3.original_test, figures.v3.shifted_heldout, figures.v3.field_shadow]
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    width = 0.38
    for offset, values, label, colour in ((-width / 2, v1, V1_LABEL, "tab:blue"),
                                          (width / 2, v3, V3_LABEL, "tab:green")):
        xs = [i + offset for i in range(len(sets))]
        heights = [v or 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=label, color=colour)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(_pct(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("top-1 accuracy")
    gain = figures.gain
    ax.set_title("digits shifted one pixel: v1 before, v3 retrained on the field's captures"
                 + (f"\nheld-out gain {100 * gain:+.1f} points" if gain is not None else ""))
    ax.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(figures: LoopFigures, path: Path, *, ok: bool, reason: str,
                  elapsed_s: float) -> Path:
    def acc(value: Accuracies | None) -> dict[str, Any] | None:
        return None if value is None else {
            "original_test": value.original_test, "shifted_heldout": value.shifted_heldout,
            "field_shadow": value.field_shadow}

    path.write_text(json.dumps({"ok": ok, "reason": reason, "elapsed_s": round(elapsed_s, 1),
                                "accuracy": {V1_LABEL: acc(figures.v1),
                                             V3_LABEL: acc(figures.v3)},
                                "heldout_gain": figures.gain, "stages": figures.stages},
                               indent=2, default=str) + "\n")
    return path


def step_verdicts(state: ControllerState, rollout_id: str) -> list[dict[str, Any]]:
    """Each step's last verdict: green's and blue's accuracy on the devices' labelled
    checks (the scope with the fewest samples), and why it passed or held."""
    names = {d.step_index: str(d.detail.get("name", "")) for d in state.decisions(rollout_id)
             if d.kind == "step"}
    last: dict[int, dict[str, Any]] = {}
    for decision in state.decisions(rollout_id):
        if decision.kind == "verdict" and decision.step_index is not None:
            last[decision.step_index] = dict(decision.detail)
    out = []
    for index, detail in sorted(last.items()):
        scopes = [s for s in detail.get("scopes", []) if s.get("green_accuracy") is not None]
        scope = min(scopes, key=lambda s: s.get("samples", 0), default=None)
        name = names.get(index, str(index))
        if scope is None:
            out.append({"step": name, "status": detail.get("status"),
                        "text": f"step {name}: {detail.get('status')} (no labelled checks)"})
            continue
        green, blue = scope["green_accuracy"], scope.get("blue_accuracy")
        gain = None if blue is None else green - blue
        text = (f"step {name}: {detail.get('status')}: {V3_LABEL} right on "
                f"{100 * green:.1f}% of {scope.get('samples')} labelled inferences"
                + ("" if blue is None else f", {V1_LABEL} on {100 * blue:.1f}% "
                   f"(gain {100 * (gain or 0):+.1f} points)")
                + (f"; held: {scope['held']}" if scope.get("held") else ""))
        out.append({"step": name, "status": detail.get("status"), "where": scope["where"],
                    "samples": scope.get("samples"), "green_accuracy": green,
                    "blue_accuracy": blue, "gain": gain, "text": text})
    return out


def shadow_accuracies(state: ControllerState, rollout_id: str) -> dict[str, Any]:
    """The devices' labelled accuracy of blue and green in the shadow step's last verdict."""
    verdicts = [d for d in state.decisions(rollout_id) if d.kind == "verdict"
                and d.step_index == 0]
    for decision in reversed(verdicts):
        for scope in decision.detail.get("scopes", []):
            if scope.get("green_accuracy") is not None:
                return {"where": scope["where"], "samples": scope.get("samples"),
                        "green_accuracy": scope["green_accuracy"],
                        "blue_accuracy": scope.get("blue_accuracy"),
                        "status": decision.detail.get("status")}
    return {}
