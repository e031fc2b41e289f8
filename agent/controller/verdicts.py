"""What the controller reads from a step's acknowledgements and verdicts, in words and
figures: a package that is not the spec's, devices held by another rollout's trial,
a step short of data, and the figures of each verdict kept in the decisions log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.controller.guardrails import Verdict
from agent.controller.plan import Step
from agent.controller.spec import GuardrailSpec, RolloutSpec
from agent.controller.state import Assignment


def package_problem(spec: RolloutSpec, assignments: Iterable[Assignment]) -> str | None:
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


def blocked_on_trial(assignments: Iterable[Assignment]) -> list[Assignment]:
    """The latest try of each command that a device refused because another rollout's
    model is on trial there (``assignments`` ordered by ``rollout_seq``: a retry comes
    after its first try)."""
    latest: dict[tuple[str, int], Assignment] = {}
    for a in assignments:
        latest[(a.thing, a.ordinal)] = a
    return [a for a in latest.values() if a.outcome == "rejected" and a.code == "on_trial"]


def blocked_reason(step: Step, rollout_id: str, blocked: list[Assignment]) -> str:
    """Why the step waits: the first of the ``blocked`` devices and the rollout on trial."""
    first = blocked[0]
    other = first.ack_data.get("trial_rollout_id", "another rollout")
    more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
    return (f"step {step.name}: {first.thing}{more} is on trial of "
            f"{first.ack_data.get('model', 'a model')} from rollout {other}, which has "
            f"not confirmed or rolled it back: finish {other}, then resume {rollout_id}")


def undecided_reason(step: Step, rollout_id: str, elapsed: float, verdict: Verdict,
                     limits: GuardrailSpec) -> str:
    """Why the step could not be decided in time: the scopes short of data, or held by a
    promotion condition (``min_accuracy_gain``)."""
    short = ", ".join(f"{s.where} {s.samples}/{limits.min_samples} samples "
                      f"{s.reporting}/{limits.min_devices} devices"
                      for s in verdict.scopes if not s.enough)
    held = "; ".join(f"{s.where}: {s.held}" for s in verdict.scopes if s.enough and s.held)
    if held and not short:
        return (f"step {step.name} undecided after {elapsed:.0f} s: {held}; promote, "
                f"resume or abort {rollout_id}")
    return (f"step {step.name} undecided after {elapsed:.0f} s: not enough data in "
            f"{short or 'every scope'}; promote, resume or abort {rollout_id}")


def verdict_detail(verdict: Verdict, limits: GuardrailSpec) -> dict[str, Any]:
    """The figures of one evaluation, for progress lines and the report."""
    worst = [f for f in verdict.scopes if f.green_p99_us is not None]
    agreements = [f.agreement for f in verdict.scopes if f.agreement is not None]
    return {
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
                    "enough": f.enough, "green_accuracy": f.green_accuracy,
                    "blue_accuracy": f.blue_accuracy, "held": f.held}
                   for f in verdict.scopes]}
