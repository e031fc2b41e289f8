"""A rollout's timeline (:class:`~agent.controller.timeline.Timeline`) drawn as a PNG with
matplotlib, which only this module imports (the ``controller`` extra).

Panels, top to bottom, on one time axis (seconds, minutes or hours since the
rollout started, by its length):

* **phases**: the steps, shaded by phase (shadow, weighted and serve steps, a pause,
  the fleet rollback) and each step's name at its start;
* **devices** shadowing and serving green, from acknowledged commands;
* **green weight**: the traffic share of the latest acknowledged command;
* **p99** of green and blue per verdict, on a log axis (a microsecond model and a
  25 ms build both stay readable); a filled marker is a passing verdict, a hollow
  one a verdict short of data, a red cross a breach. Where a verdict had green's
  p99 but no blue p99 (no baseline yet) a hollow marker on the axis says "no
  baseline": blue is never drawn as 0. ``max_p99_us`` and blue times
  ``max_p99_ratio`` show as limits (a ``max_p99_us`` far above the figures is
  named instead, so it does not flatten them); the legend gives the last p99s;
* **agreement** on a fixed 0..1.05 axis with ``min_agreement`` ("no shadow
  comparison" when no verdict had one);
* **green samples**: the fewest over the step's scopes against ``min_samples``
  (hollow: short of data; the line starts again with each step's window).

Step boundaries are vertical lines through every panel; the breach is a red dashed
line with its reason, wrapped, on the p99 panel. The title is the rollout id and
status, with the status reason under it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from agent.controller.report import StepSpan
from agent.controller.state import Assignment, DecisionRecord
from agent.controller.timeline import Phase, Timeline, Verdict, runs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

GREEN, BLUE, BREACH = "tab:green", "tab:blue", "tab:red"
PHASE_COLOURS = {"shadow": "#c5b3e6", "weighted": "#ffd59e", "serve": "#b7e1b1",
                 "step": "#dddddd", "paused": "#9e9e9e", "rollback": "#f4a6a6"}
WIDTH_PX = 1100  # figure width at DPI: what label-fitting estimates go by
DPI = 100


def draw_timeline(timeline: Timeline, path: Path) -> Path:
    """Draw ``timeline`` as a PNG at ``path`` (its folder is created); ``path``."""
    matplotlib.use("Agg")  # no display on a controller host
    import matplotlib.pyplot as plt

    t0, end, per = timeline.t0, timeline.end, timeline.per
    spans, verdicts, rollbacks = timeline.spans, timeline.verdicts, timeline.rollbacks
    fig, axes = plt.subplots(6, 1, figsize=(WIDTH_PX / DPI, 13.5), sharex=True,
                             layout="constrained",
                             gridspec_kw={"height_ratios": [0.75, 1.0, 0.75, 2.1, 1.1, 1.1]})
    strip, devices, weight, latency, agreement, samples = axes
    for ax in axes:
        ax.set_xlim(0, end / per * 1.02)
        ax.grid(True, axis="y", alpha=0.3)
        for span in spans[1:]:
            ax.axvline(span.start / per, color="0.45", linewidth=0.8, linestyle=":")
        for d in rollbacks[:1]:
            ax.axvline((d.at - t0) / per, color=BREACH, linestyle="--", linewidth=1.4)
    _draw_strip(strip, timeline.phases, spans, per, end)
    for ax in axes[1:]:
        for phase in timeline.phases:
            if phase.kind != "paused":
                ax.axvspan(phase.start / per, phase.end / per, alpha=0.18, linewidth=0,
                           color=PHASE_COLOURS[phase.kind])
    _draw_devices(devices, weight, timeline.assignments, t0, per, end)
    _draw_latency(latency, verdicts, timeline.guardrails)
    if rollbacks:
        _annotate_breach(latency, rollbacks[0], t0, per, end,
                         why="aborted" if timeline.status == "aborted" else "breach")
    _draw_agreement(agreement, verdicts, timeline.guardrails)
    _draw_samples(samples, verdicts)
    samples.set_xlabel(f"time since the rollout started ({timeline.unit})")

    fig.suptitle(f"{timeline.rollout_id}: {timeline.status.replace('_', ' ')}", fontsize=14,
                 fontweight="bold")
    if timeline.reason:
        strip.set_title(_fit(timeline.reason, width=130, lines=2), fontsize=9, loc="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# ---- panels -------------------------------------------------------------------------------


def _draw_strip(ax: Axes, all_phases: Sequence[Phase], spans: Sequence[StepSpan], per: float,
                end: float) -> None:
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    span_px = WIDTH_PX * 0.85 / max(end, 1e-9)  # pixels per second, roughly
    pauses = [p for p in all_phases if p.kind == "paused"]
    for phase in all_phases:
        hatch = "//" if phase.kind == "paused" else None
        ax.axvspan(phase.start / per, phase.end / per, ymin=0.55, ymax=1.0, linewidth=0,
                   color=PHASE_COLOURS[phase.kind], alpha=0.5 if hatch else 0.9, hatch=hatch)
        if hatch:
            continue  # a pause overlays steps: it is named among the step names below
        # the label goes in the widest part of the phase that no pause covers
        start, stop = _widest_gap(phase.start, phase.end, pauses)
        # "weighted steps", else "weighted", else nothing (a narrow rollback is named
        # among the step names below)
        label = next((text for text in (phase.label, phase.label.partition(" ")[0])
                      if _fits(text, (stop - start) * span_px, 9)), "")
        if label:
            ax.text((start + stop) / 2 / per, 0.77, label, ha="center",
                    va="center", fontsize=9, fontweight="bold", color="0.15")
    # Step names (and pauses, and a rollback too narrow for its label) under the phases,
    # moved down a row where the previous name is still in the way.
    marks = [(span.start, span.name, "black") for span in spans]
    marks += [(p.start, p.label, "0.3") for p in pauses]
    marks += [(p.start, p.label, "darkred") for p in all_phases
              if p.kind == "rollback" and not _fits(p.label, (p.end - p.start) * span_px, 9)]
    rows = [0.0, 0.0, 0.0]  # where each row of names is free again (pixels)
    for start, text, colour in sorted(marks, key=lambda m: m[0]):
        x_px = start * span_px
        name = text if len(text) <= 22 else text[:21] + "…"
        row = next((i for i, free in enumerate(rows) if free <= x_px),
                   min(range(len(rows)), key=rows.__getitem__))  # all taken: least overlap
        rows[row] = x_px + _text_px(name, 8) + 6
        y = 0.42 - 0.16 * row
        ax.plot([start / per] * 2, [y, 0.55], color=colour, linewidth=0.8)
        ax.text(start / per, y, f" {name}", ha="left", va="center", fontsize=8, color=colour,
                fontweight="bold" if colour == "darkred" else "normal")
    ax.set_ylabel("steps", rotation=0, ha="right", va="center")


def _draw_devices(devices: Axes, weight: Axes, assignments: Sequence[Assignment], t0: float,
                  per: float, end: float) -> None:
    state: dict[str, str] = {}
    times, serving, shadowing = [0.0], [0], [0]
    weight_t, weight_v = [0.0], [0]
    acked = sorted((a for a in assignments if a.acked_at is not None and a.outcome == "ok"),
                   key=lambda a: (a.acked_at or 0.0, a.thing))
    for a in acked:
        at = ((a.acked_at or t0) - t0) / per
        if a.action == "shadow":
            state[a.thing] = "shadow"
        elif a.action == "set_weights":
            state[a.thing] = "serve" if int(a.args.get("green", 0)) > 0 else "none"
            weight_t.append(at)
            weight_v.append(int(a.args.get("green", 0)))
        elif a.action == "promote":
            state[a.thing] = "serve"
            weight_t.append(at)
            weight_v.append(100)
        elif a.action == "rollback":
            state[a.thing] = "none"
            if weight_v[-1] != 0:
                weight_t.append(at)
                weight_v.append(0)
        times.append(at)
        serving.append(sum(v == "serve" for v in state.values()))
        shadowing.append(sum(v == "shadow" for v in state.values()))
    times.append(end / per)
    serving.append(serving[-1])
    shadowing.append(shadowing[-1])
    devices.step(times, serving, where="post", color=GREEN, linewidth=2,
                 label="serving green")
    if any(shadowing):
        devices.step(times, shadowing, where="post", color="tab:purple", linewidth=2,
                     label="shadowing green")
    devices.set_ylabel("devices")
    devices.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
    devices.set_ylim(0, max(1, *serving, *shadowing) * 1.5 + 0.3)  # room for the legend
    devices.legend(loc="upper left", fontsize=8, framealpha=0.85)

    weight_t.append(end / per)
    weight_v.append(weight_v[-1])
    weight.step(weight_t, weight_v, where="post", color="tab:orange", linewidth=2)
    weight.set_ylabel("green weight %")
    weight.set_ylim(-5, 108)
    weight.set_yticks([0, 50, 100])


def _draw_latency(ax: Axes, verdicts: Sequence[Verdict], guardrails: Mapping[str, Any]) -> None:
    ax.set_ylabel("p99 latency (us)")
    nan = float("nan")
    xs = [v.at for v in verdicts]
    green = [v.green if v.green and v.green > 0 else nan for v in verdicts]
    blue = [v.blue if v.blue and v.blue > 0 else nan for v in verdicts]
    values = [y for y in (*green, *blue) if y == y]
    limit_us = guardrails.get("max_p99_us")
    ratio = guardrails.get("max_p99_ratio")
    if not values:
        ax.text(0.5, 0.5, "no p99 figures (no verdict had samples)", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
        ax.set_yticks([])
        return
    ax.set_yscale("log")
    size = _marker_size(len(verdicts))
    ax.plot(xs, blue, "-", color=BLUE, linewidth=1.6, label=f"blue p99{_last(blue)}")
    ax.plot(xs, green, "-", color=GREEN, linewidth=1.6, label=f"green p99{_last(green)}")
    if size:
        ax.plot(xs, blue, "s", color=BLUE, markersize=size)
        for status, face in (("pass", GREEN), ("insufficient", "white")):
            chosen = [(x, g) for x, g, v in zip(xs, green, verdicts, strict=True)
                      if v.status == status and g == g]
            if chosen:
                ax.plot(*zip(*chosen, strict=True), "o", color=GREEN, markerfacecolor=face,
                        markersize=size + 1, linestyle="none",
                        label="green: short of data" if face == "white" else "green: pass")
    breaches = [(x, g) for x, g, v in zip(xs, green, verdicts, strict=True)
                if v.status == "breach" and g == g]
    if breaches:
        ax.plot(*zip(*breaches, strict=True), "X", color=BREACH, markersize=10,
                linestyle="none", label="breach verdict")
    if ratio:
        ax.plot(xs, [b * ratio for b in blue], ":", color=BLUE, linewidth=1.2,
                label=f"limit: blue x {ratio:g}")
        values += [b * ratio for b in blue if b == b]
    low, high = min(values) / 2.2, max(values) * 2.2
    if limit_us and limit_us <= high * 4:
        ax.axhline(limit_us, color=BREACH, linestyle=":", linewidth=1.2,
                   label=f"limit: {limit_us:,.0f} us")
        low, high = min(low, limit_us / 2.2), max(high, limit_us * 1.6)
    elif limit_us:  # far above the figures: it would flatten them into one line
        ax.text(0.99, 0.97, f"limit {limit_us:,.0f} us: above this axis",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color=BREACH)
    ax.set_ylim(low, high)
    subs = [1.0, 2.0, 5.0] if high / low < 1e4 else [1.0]
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}" if y >= 1 else f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    # Blue is never drawn as 0: a verdict with green's p99 but not blue's is marked on the
    # axis (one with neither had no samples yet: the samples panel shows that).
    def no_baseline(v: Verdict) -> bool:
        return bool(v.green and v.green > 0) and not (v.blue and v.blue > 0)

    missing = [v.at for v in verdicts if no_baseline(v)]
    if missing:
        ax.plot(missing, [0.05] * len(missing), "s", transform=ax.get_xaxis_transform(),
                markerfacecolor="white", color=BLUE, markersize=max(size, 3.0) + 1,
                linestyle="none", label="blue: no baseline")
        middle = (xs[0] + xs[-1]) / 2
        for first, last in runs(verdicts, no_baseline):
            left = first <= middle  # the label runs into the plot, never off its edge
            ax.text(first if left else last, 0.1, "no baseline",
                    transform=ax.get_xaxis_transform(), ha="left" if left else "right",
                    va="bottom", fontsize=8, color=BLUE, style="italic")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85, ncols=2)


def _annotate_breach(ax: Axes, rollback: DecisionRecord, t0: float, per: float,
                     end: float, *, why: str) -> None:
    reason = str((rollback.detail or {}).get("reason") or "rollback")
    x = (rollback.at - t0) / per
    right = x > end / per / 2  # the box goes on the side with more room
    ax.annotate(_fit(f"{why}: {reason}", width=56, lines=4), (x, 0.97),
                xycoords=ax.get_xaxis_transform(), xytext=(-8 if right else 8, 0),
                textcoords="offset points", ha="right" if right else "left", va="top",
                fontsize=8, color="darkred",
                bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": BREACH,
                      "alpha": 0.92})


def _draw_agreement(ax: Axes, verdicts: Sequence[Verdict],
                    guardrails: Mapping[str, Any]) -> None:
    ax.set_ylabel("agreement")
    ax.set_ylim(0, 1.05)  # fixed: a shadow phase's figures stay visible beside the limit
    points = [(v.at, v.agreement) for v in verdicts if v.agreement is not None]
    if not points:
        ax.text(0.5, 0.5, "no shadow comparison", transform=ax.transAxes, ha="center",
                va="center", color="0.4", fontsize=10)
        return
    ax.plot(*zip(*points, strict=True), "o-" if _marker_size(len(points)) else "-",
            color="tab:purple", markersize=_marker_size(len(points)),
            label="agreement (lowest scope)")
    floor = guardrails.get("min_agreement")
    if floor is not None:
        ax.axhline(floor, color=BREACH, linestyle=":", linewidth=1.2,
                   label=f"limit: {floor:g}")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)


def _draw_samples(ax: Axes, verdicts: Sequence[Verdict]) -> None:
    ax.set_ylabel("green samples")
    points = [(v.at, v.samples, v.min_samples, v.status) for v in verdicts
              if v.samples is not None]
    if not points:
        ax.text(0.5, 0.5, "no sample counts recorded (an older controller's database)",
                transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_yticks([])
        return
    size = _marker_size(len(points))
    # Each step's window starts afresh: a line across a step boundary would be a drop
    # that never happened.
    line_x: list[float] = []
    line_y: list[float] = []
    previous: int | None = None
    for v in verdicts:
        if v.samples is None:
            continue
        if line_x and v.step != previous:
            line_x.append(v.at)
            line_y.append(float("nan"))
        line_x.append(v.at)
        line_y.append(v.samples)
        previous = v.step
    ax.plot(line_x, line_y, "-", color=GREEN, linewidth=1.4, label="fewest over scopes")
    for enough, style in ((True, GREEN), (False, "white")):
        chosen = [p for p in points if (p[3] != "insufficient") == enough]
        if size and chosen:
            ax.plot([p[0] for p in chosen], [p[1] for p in chosen], "o", color=GREEN,
                    markerfacecolor=style, markersize=size, linestyle="none")
    needed = [(p[0], p[2]) for p in points if p[2] is not None]
    if needed:
        ax.step(*zip(*needed, strict=True), where="post", color=BREACH, linestyle=":",
                linewidth=1.2, label="min_samples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)



# ---- helpers ------------------------------------------------------------------------------


def _widest_gap(start: float, end: float, pauses: Sequence[Phase]) -> tuple[float, float]:
    """The longest stretch of ``start..end`` outside every pause."""
    gaps, at = [], start
    for pause in sorted(pauses, key=lambda p: p.start):
        if pause.end <= at or pause.start >= end:
            continue
        gaps.append((at, max(at, pause.start)))
        at = max(at, pause.end)
    gaps.append((at, max(at, end)))
    return max(gaps, key=lambda g: g[1] - g[0])


def _marker_size(count: int) -> float:
    """Markers while they can be told apart; past that the line alone reads better."""
    return 5.0 if count <= 60 else 3.0 if count <= 150 else 0.0


def _last(series: Sequence[float]) -> str:
    value = next((y for y in reversed(series) if y == y), None)
    return "" if value is None else f" (last {value:,.0f} us)"


def _fit(text: str, *, width: int, lines: int) -> str:
    wrapped = textwrap.wrap(" ".join(text.split()), width=width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:width - 1].rstrip() + "…"
    return "\n".join(wrapped)


def _text_px(text: str, points: float) -> float:
    return len(text) * points * 0.62 * DPI / 72  # an average glyph of DejaVu Sans


def _fits(text: str, width_px: float, points: float) -> bool:
    return bool(text) and _text_px(text, points) + 8 <= width_px
