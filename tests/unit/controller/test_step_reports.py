"""The reports a step's verdict reads: what ``StepReports`` keeps gives the verdict that
every report the rollout received gives, whatever arrives in whatever order."""

from __future__ import annotations

import random

import pytest

from agent.controller.guardrails import counted_reports, evaluate
from agent.controller.plan import Step, command_seq, plan_rollout
from agent.controller.registry import FleetRegistry
from agent.controller.spec import GuardrailSpec, parse_spec
from agent.controller.step_reports import StepReports
from agent.core.histogram import BUCKET_EDGES_US, BUCKETS_VERSION
from agent.wire.fields import Variant
from agent.wire.messages import (
    Buckets,
    HealthReport,
    Metrics,
    ProfileInfo,
    Register,
    VariantMetrics,
)

SHA = "ab" * 32
BOOTS = ("a" * 32, "b" * 32)
N = len(BUCKET_EDGES_US) + 1
RID = "r-1"
THINGS = ("pi-1", "pi-2", "jet-1", "pi-9")  # pi-9 is in no step


def register(thing: str, target: str, groups: list[str]) -> Register:
    profile = ProfileInfo(board="b", board_family="generic", neo_target=target, arch="x86_64",
                          reported_arch="x86_64", emulated=True, os_bits=64, cpu_count=4,
                          mem_total_bytes=2**31, mem_available_bytes=2**30)
    return Register(thing=thing, seq=1, sent_at=0, groups=groups, profile=profile,
                    agent_version="0.1.0", boot_id=BOOTS[0], models={"blue": "digits-v1"})


def three_steps() -> list[Step]:
    registry = FleetRegistry(clock=lambda: 0.0)
    registry.observe(register("pi-1", "rasp4b", ["kitchen"]), now=0.0)
    registry.observe(register("pi-2", "rasp4b", ["kitchen", "garage"]), now=0.0)
    registry.observe(register("jet-1", "jetson_nano", ["garage"]), now=0.0)
    spec = parse_spec({
        "name": "digits", "model": "digits-v2", "groups": ["kitchen", "garage"],
        "packages": {t: {"url": "https://e.com/p", "sha256": SHA, "version": 2}
                     for t in ("rasp4b", "jetson_nano")},
        "strategy": {"type": "all_at_once", "watch_s": 60}, "weights": [10, 50, 100]})
    return plan_rollout(spec, registry.devices(), rollout_id=RID)


WEIGHTS = {"digits-v1": [3 if i in (20, 30, 40) else 0 for i in range(N)],
           "digits-v2": [3 if i in (20, 30, 38, 42) else 0 for i in range(N)]}
LIMITS = GuardrailSpec.model_validate({
    "min_samples": 20, "max_p99_us": None, "max_p99_ratio": 1.5, "min_p99_excess_us": 0.0,
    "max_error_rate": 0.2, "min_agreement": 0.7, "max_soc_temp_c": 75.0,
    "max_rss_bytes": 900, "install_failure_pct": None})


def random_variant(rng: random.Random, steps: list[Step], at: int) -> VariantMetrics:
    """Counters that grow with the report's ``at`` (so that windows diff), plus a little
    noise that tells apart two reports at the same ``at``."""
    step = rng.choice(steps)
    seq = command_seq(step.index, rng.randrange(2)) if rng.random() < 0.9 else None
    model = rng.choice(("digits-v2", "digits-v1"))
    cumulative = [at * weight + (rng.randrange(3) if weight else 0)
                  for weight in WEIGHTS[model]]
    total = sum(cumulative)
    checked = rng.randrange(total + 1)
    return VariantMetrics(
        model_version=model,
        rollout_id=rng.choice((RID, RID, RID, "r-0")), rollout_seq=seq,
        series=rng.randrange(2), inferences_total=total, errors_total=rng.randrange(8),
        checked_total=checked, correct_total=rng.randrange(checked + 1),
        buckets=Buckets(version=BUCKETS_VERSION, counts=cumulative),
        window_s=1.0, inferences=0, errors=0, throughput_per_s=0.0)


def random_report(rng: random.Random, steps: list[Step]) -> Metrics:
    at = rng.randrange(12)
    names: tuple[Variant, ...] = ("blue", "green")
    variants = {name: random_variant(rng, steps, at)
                for name in rng.sample(names, rng.randint(0, 2))}
    if variants and rng.random() < 0.8:  # most reports: every variant at one seq
        seq = next(iter(variants.values())).rollout_seq
        variants = {k: v.model_copy(update={"rollout_seq": seq, "rollout_id": RID})
                    for k, v in variants.items()}
    health = HealthReport(soc_temp_c=rng.uniform(40.0, 76.0), rss_bytes=rng.randrange(910))
    return Metrics(thing=rng.choice(THINGS), seq=at, sent_at=0,
                   boot_id=rng.choice(BOOTS), variants=variants,
                   health=health if rng.random() < 0.7 else None)


@pytest.mark.parametrize("seed", range(40))
def test_the_kept_reports_give_the_verdict_of_all_reports(seed: int) -> None:
    rng = random.Random(seed)
    steps = three_steps()
    index = StepReports(steps)
    received: list[Metrics] = []
    judged = 0
    for _tick in range(6):
        for _ in range(rng.randrange(40)):
            report = random_report(rng, steps)
            index.add(report)
            received.append(report)
        for step in steps:
            fresh_things = set(rng.sample(THINGS, rng.randint(1, len(THINGS))))
            everything = [r for r in received if r.thing in fresh_things]
            kept = index.for_step(step, fresh_things.__contains__)
            assert evaluate(LIMITS, kept, step=step) == evaluate(LIMITS, everything, step=step)
            assert len(kept) <= len(counted_reports(everything, step))
            judged += bool(counted_reports(everything, step))
    assert judged, "the reports must count for some step"


def test_reports_of_no_step_are_not_kept() -> None:
    steps = three_steps()
    index = StepReports(steps)
    rng = random.Random(7)
    other = random_variant(rng, steps, 1).model_copy(update={"rollout_id": "r-0"})
    index.add(Metrics(thing="pi-1", seq=1, sent_at=0, boot_id=BOOTS[0],
                      variants={"blue": other}))
    index.add(Metrics(thing="pi-1", seq=2, sent_at=0, boot_id=BOOTS[0], variants={}))
    assert all(index.for_step(step, lambda _thing: True) == [] for step in steps)
