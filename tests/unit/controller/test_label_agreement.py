"""Judging a candidate against the labels: ``agreement_with: labels`` and the
``min_accuracy_gain`` promotion condition."""

from __future__ import annotations

from typing import Any

import pytest
from test_guardrails import counts, limits, report, steps, vm

from agent.controller.errors import SpecError
from agent.controller.guardrails import evaluate
from agent.controller.plan import command_seq
from agent.controller.spec import GuardrailSpec, effective_guardrails, parse_spec
from agent.controller.verdicts import undecided_reason, verdict_detail
from agent.wire.messages import Metrics

THINGS = ("pi-1", "pi-2", "jet-1")


def shadow_reports(blue_acc: float, green_acc: float, n: int = 200) -> list[Metrics]:
    """A shadow step's two cumulative reports per device: blue and green ran on the same
    ``n`` labelled inputs, right on ``blue_acc`` and ``green_acc`` of them."""
    seq = command_seq(0, 1)
    return [report(thing, 300 + i, {
        "blue": vm("digits-v1", counts({30: k}), seq=seq, checked=k, correct=int(k * blue_acc)),
        "green": vm("digits-v2", counts({30: k}), seq=seq, checked=k,
                    correct=int(k * green_acc))})
        for thing in THINGS for i, k in enumerate((0, n))]


def shadow_step() -> Any:
    return steps(shadow={"duration_s": 60, "sample_rate": 1.0})[0]


def test_agreement_with_labels_is_greens_own_accuracy() -> None:
    # by default agreement is judged against blue (here the labelled proxy)
    reports = shadow_reports(blue_acc=0.95, green_acc=0.6)
    against_blue = evaluate(limits(min_agreement=0.9), reports, step=shadow_step())
    assert against_blue.status == "breach" and against_blue.breach is not None
    assert against_blue.breach.rule == "agreement"
    assert abs(against_blue.breach.observed - 0.65) < 1e-9  # 1 - (0.95 - 0.6)
    # against the labels the same green is judged by its own accuracy
    verdict = evaluate(limits(min_agreement=0.5, agreement_with="labels"), reports,
                       step=shadow_step())
    assert verdict.status == "pass", verdict
    assert all(abs((s.agreement or 0) - 0.6) < 1e-9 for s in verdict.scopes)
    strict = evaluate(limits(min_agreement=0.7, agreement_with="labels"), reports,
                      step=shadow_step())
    assert strict.breach is not None and strict.breach.rule == "agreement"
    assert "agreement 0.600 under 0.7" in strict.breach.detail


def test_min_accuracy_gain_holds_the_step_until_green_is_better_enough() -> None:
    step = shadow_step()
    rails = limits(min_agreement=0.8, agreement_with="labels", min_accuracy_gain=0.1)
    better = evaluate(rails, shadow_reports(blue_acc=0.5, green_acc=0.9), step=step)
    assert better.status == "pass", better
    scope = better.scopes[0]
    assert (scope.green_accuracy, scope.blue_accuracy, scope.held) == (0.9, 0.5, "")

    rails = limits(min_agreement=0.8, agreement_with="labels", min_accuracy_gain=0.5)
    held = evaluate(rails, shadow_reports(blue_acc=0.5, green_acc=0.9), step=step)
    assert held.status == "insufficient" and not held.breaches
    assert set(held.short) == {s.where for s in held.scopes}
    assert all("accuracy gain +0.400" in s.held and "under +0.5" in s.held
               for s in held.scopes)
    reason = undecided_reason(step, "r-1", 61.0, held, rails)
    assert "accuracy gain +0.400" in reason and "not enough data" not in reason
    detail = verdict_detail(held, rails)
    assert detail["scopes"][0]["green_accuracy"] == 0.9
    assert detail["scopes"][0]["held"].startswith("accuracy gain")


def test_min_accuracy_gain_without_labelled_checks_holds() -> None:
    seq = command_seq(0, 1)
    unlabelled = [report(t, 400 + i, {"blue": vm("digits-v1", counts({30: k}), seq=seq),
                                      "green": vm("digits-v2", counts({30: k}), seq=seq)})
                  for t in THINGS for i, k in enumerate((0, 200))]
    verdict = evaluate(limits(min_accuracy_gain=0.0), unlabelled, step=shadow_step())
    assert verdict.status == "insufficient"
    assert all("accuracy gain unknown" in s.held for s in verdict.scopes)
    # the condition off (the default): the same reports pass
    assert evaluate(limits(), unlabelled, step=shadow_step()).status == "pass"


def test_gain_after_a_promote_is_judged_against_the_baseline() -> None:
    (step,) = steps()
    seq = command_seq(0, 1)
    green = [report(t, 10 + i, {"blue": vm("digits-v2", counts({30: k}), seq=seq, checked=k,
                                           correct=int(k * 0.9))})
             for t in THINGS for i, k in enumerate((1, 301))]
    baseline = [report(t, 1 + i, {"blue": vm("digits-v1", counts({30: k}), seq=None,
                                             rollout=None, checked=k, correct=k // 2)})
                for t in THINGS for i, k in enumerate((0, 300))]
    rails = limits(min_accuracy_gain=0.3)
    assert evaluate(rails, green, step=step, baseline=baseline).status == "pass"
    assert evaluate(rails, green, step=step).status == "insufficient"  # no blue to beat


def test_spec_options_default_off_and_validate() -> None:
    g = GuardrailSpec()
    assert (g.agreement_with, g.min_accuracy_gain) == ("blue", None)
    lines = effective_guardrails(g)
    assert "agreement_with: blue (default)" in lines and "min_accuracy_gain: not set" in lines
    base: dict[str, Any] = {
        "name": "r", "model": "digits-v3", "groups": ["g"],
        "packages": {"onnx": {"url": "https://e.com/p", "sha256": "ab" * 32, "version": 3}},
        "strategy": {"type": "all_at_once", "watch_s": 1}}
    spec = parse_spec({**base, "guardrails": {"agreement_with": "labels",
                                              "min_accuracy_gain": 0.1}})
    assert (spec.guardrails.agreement_with, spec.guardrails.min_accuracy_gain) == ("labels", 0.1)
    assert parse_spec({**base, "guardrails": {"min_accuracy_gain": "off"}}) \
        .guardrails.min_accuracy_gain is None
    with pytest.raises(SpecError) as bad:
        parse_spec({**base, "guardrails": {"agreement_with": "teacher"}})
    assert bad.value.field == "guardrails.agreement_with"
    with pytest.raises(SpecError) as big:
        parse_spec({**base, "guardrails": {"min_accuracy_gain": 2}})
    assert big.value.field == "guardrails.min_accuracy_gain" and "<= 1" in str(big.value)
