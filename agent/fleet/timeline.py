"""A rollout's timeline as a PNG: devices on green, green's traffic weight, p99 latency
and agreement over time, with the breach marked. Drawn from the controller's database
alone (decisions log and acknowledged commands), so it works after the fact."""

from __future__ import annotations

from pathlib import Path

from agent.fleet.state import ControllerState


def write_timeline(state: ControllerState, rollout_id: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a controller host
    import matplotlib.pyplot as plt

    record = state.rollout(rollout_id)
    if record is None:
        raise ValueError(f"no rollout {rollout_id!r}")
    t0 = record.created_at
    on_green: dict[str, bool] = {}
    green_t, green_n, weight_t, weight_v = [0.0], [0], [0.0], [0]
    for a in sorted((a for a in state.assignments(rollout_id) if a.acked_at is not None
                     and a.outcome == "ok"), key=lambda a: a.acked_at or 0.0):
        at = (a.acked_at or t0) - t0
        if a.action in ("promote", "set_weights", "shadow"):
            on_green[a.thing] = a.action != "shadow"
        if a.action == "rollback":
            on_green[a.thing] = False
            if weight_v[-1] != 0:
                weight_t.append(at)
                weight_v.append(0)
        if a.action == "set_weights":
            weight_t.append(at)
            weight_v.append(int(a.args.get("green", 0)))
        elif a.action == "promote":
            weight_t.append(at)
            weight_v.append(100)
        green_t.append(at)
        green_n.append(sum(on_green.values()))
    verdicts = [d for d in state.decisions(rollout_id) if d.kind == "verdict"]
    v_t = [d.at - t0 for d in verdicts]
    p99 = [(d.detail or {}).get("green_p99_us") for d in verdicts]
    blue = [(d.detail or {}).get("blue_p99_us") for d in verdicts]
    agreement = [(d.detail or {}).get("agreement") for d in verdicts]
    breaches = [d.at - t0 for d in state.decisions(rollout_id) if d.kind == "rollback"]

    end = max([*green_t, *v_t, *breaches, 0.0])
    green_t.append(end)
    green_n.append(green_n[-1])
    weight_t.append(end)
    weight_v.append(weight_v[-1])
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    axes[0].step(green_t, green_n, where="post")
    axes[0].set_ylabel("devices on green")
    axes[1].step(weight_t, weight_v, where="post", color="tab:orange")
    axes[1].set_ylabel("green weight %")
    axes[2].plot(v_t, [v if v is not None else float("nan") for v in p99], "o-",
                 label="green p99")
    axes[2].plot(v_t, [v if v is not None else float("nan") for v in blue], "s-",
                 label="blue p99")
    axes[2].set_ylabel("p99 (us)")
    axes[2].legend(loc="upper left")
    axes[3].plot(v_t, [v if v is not None else float("nan") for v in agreement], "o-",
                 color="tab:green")
    axes[3].set_ylabel("agreement")
    axes[3].set_xlabel("seconds since the rollout started")
    for ax in axes:
        for at in breaches:
            ax.axvline(at, color="tab:red", linestyle="--")
    fig.suptitle(f"{rollout_id}: {record.status}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
