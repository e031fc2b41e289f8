"""Fleet verdicts: merged histogram windows, step filtering, every rule and scope."""

from __future__ import annotations

from typing import Any

from agent.controller.guardrails import evaluate
from agent.controller.plan import Step, command_seq, plan_rollout
from agent.controller.registry import FleetRegistry
from agent.controller.spec import GuardrailSpec, parse_spec
from agent.core.histogram import (
    BUCKET_EDGES_US,
    BUCKETS_VERSION,
    diff_counts,
    merge_counts,
    quantiles_of,
)
from agent.wire.messages import (
    Buckets,
    HealthReport,
    Metrics,
    ProfileInfo,
    Register,
    VariantMetrics,
)

SHA = "ab" * 32
BOOT = "b" * 32
N = len(BUCKET_EDGES_US) + 1
RID = "r-1"


def register(thing: str, target: str, groups: list[str]) -> Register:
    profile = ProfileInfo(board="b", board_family="generic", neo_target=target, arch="x86_64",
                          reported_arch="x86_64", emulated=True, os_bits=64, cpu_count=4,
                          mem_total_bytes=2**31, mem_available_bytes=2**30)
    return Register(thing=thing, seq=1, sent_at=0, groups=groups, profile=profile,
                    agent_version="0.1.0", boot_id=BOOT, models={"blue": "digits-v1"})


def steps(**extra: Any) -> list[Step]:
    registry = FleetRegistry(clock=lambda: 0.0)
    registry.observe(register("pi-1", "rasp4b", ["kitchen"]), now=0.0)
    registry.observe(register("pi-2", "rasp4b", ["kitchen", "garage"]), now=0.0)
    registry.observe(register("jet-1", "jetson_nano", ["garage"]), now=0.0)
    data: dict[str, Any] = {
        "name": "digits", "model": "digits-v2", "groups": ["kitchen", "garage"],
        "packages": {t: {"url": "https://e.com/p", "sha256": SHA, "version": 2}
                     for t in ("rasp4b", "jetson_nano")},
        "strategy": {"type": "all_at_once", "watch_s": 60},
        "guardrails": {"min_samples": 1}}
    data.update(extra)
    return plan_rollout(parse_spec(data), registry.devices(), rollout_id=RID)


def limits(**values: Any) -> GuardrailSpec:
    """Only the limits a test names are checked (the others are switched off)."""
    return GuardrailSpec.model_validate({
        "min_samples": 100, "max_p99_ratio": None, "max_error_rate": None,
        "min_agreement": None, "install_failure_pct": None, **values})


def counts(spread: dict[int, int]) -> list[int]:
    out = [0] * N
    for bucket, count in spread.items():
        out[bucket] += count
    return out


def vm(model: str, cumulative: list[int], *, seq: int | None, rollout: str | None = RID,
       errors: int = 0, checked: int = 0, correct: int = 0, series: int = 0) -> VariantMetrics:
    return VariantMetrics(
        model_version=model, rollout_id=rollout, rollout_seq=seq, series=series,
        inferences_total=sum(cumulative), errors_total=errors, checked_total=checked,
        correct_total=correct, buckets=Buckets(version=BUCKETS_VERSION, counts=cumulative),
        window_s=1.0, inferences=0, errors=0, throughput_per_s=0.0)


def report(thing: str, seq: int, variants: dict[str, VariantMetrics], *,
           health: HealthReport | None = None, boot: str = BOOT) -> Metrics:
    return Metrics(thing=thing, seq=seq, sent_at=0, boot_id=boot,
                   variants=variants, health=health)  # type: ignore[arg-type]


def green_pair(thing: str, first: dict[int, int], then: dict[int, int], *, step_seq: int,
               **kw: Any) -> list[Metrics]:
    """Two cumulative reports of green (after a promote: reported as blue)."""
    start = counts(first)
    end = [a + b for a, b in zip(start, counts(then), strict=True)]
    return [report(thing, 10, {"blue": vm("digits-v2", start, seq=step_seq)}),
            report(thing, 11, {"blue": vm("digits-v2", end, seq=step_seq, **kw)})]


def test_p99_comes_from_the_merged_windows_not_averaged_percentiles() -> None:
    (step,) = steps()
    seq = command_seq(0, 1)
    fast = green_pair("pi-1", {30: 500}, {30: 990, 40: 10}, step_seq=seq)
    slow = green_pair("pi-2", {30: 7}, {50: 200}, step_seq=seq)
    verdict = evaluate(limits(max_p99_us=1e9), fast + slow, step=step)
    assert verdict.status == "insufficient"  # jet-1 did not report
    assert verdict.short == ("class:jetson_nano",)
    scope = {s.where: s for s in verdict.scopes}["class:rasp4b"]
    union = merge_counts([diff_counts(fast[0].variants["blue"].buckets.counts,
                                      fast[1].variants["blue"].buckets.counts),
                          diff_counts(slow[0].variants["blue"].buckets.counts,
                                      slow[1].variants["blue"].buckets.counts)])
    assert sum(union) == 1200 and scope.samples == 1200 and scope.reporting == 2
    assert scope.green_p99_us == quantiles_of(union, (0.99,))[0]
    averaged = (quantiles_of(counts({30: 990, 40: 10}), (0.99,))[0]  # type: ignore[operator]
                + quantiles_of(counts({50: 200}), (0.99,))[0]) / 2
    assert scope.green_p99_us != averaged


def test_stale_and_other_step_reports_are_ignored() -> None:
    earlier, later = steps(weights=[10, 100])
    seq = command_seq(later.index, 0)
    good = [m for thing in ("pi-1", "pi-2", "jet-1")
            for m in green_pair(thing, {30: 1}, {30: 200}, step_seq=seq)]
    stale = [report("pi-1", 20, {"blue": vm("digits-v2", counts({78: 5000}),
                                            seq=command_seq(earlier.index, 0))}),
             report("pi-1", 21, {"blue": vm("digits-v2", counts({78: 9000}),
                                            seq=command_seq(earlier.index, 0))})]
    other_rollout = [report("pi-2", 30 + i, {"blue": vm("digits-v2", counts({78: 100 * i}),
                                                        seq=seq, rollout="r-0")})
                     for i in (1, 2)]
    outsider = [report("pi-9", 40 + i, {"blue": vm("digits-v2", counts({78: 100 * i}),
                                                   seq=seq)}) for i in (1, 2)]
    verdict = evaluate(limits(max_p99_us=1000), good + stale + other_rollout + outsider,
                       step=later)
    assert verdict.status == "pass", verdict
    assert {s.where: s.samples for s in verdict.scopes} == {
        "class:jetson_nano": 200, "class:rasp4b": 400, "group:garage": 400,
        "group:kitchen": 400}
    # the same high-latency reports, in this step, breach
    bad = [report("pi-1", 50 + i, {"blue": vm("digits-v2", counts({78: n}), seq=seq, series=1)})
           for i, n in enumerate((1, 5000))]  # a later series of the same boot
    verdict = evaluate(limits(max_p99_us=1000), good + bad, step=later)
    assert verdict.status == "breach"
    assert verdict.breach is not None and verdict.breach.rule == "p99"
    assert {b.where for b in verdict.breaches} == {"class:rasp4b", "group:kitchen"}


def test_ratio_against_concurrent_blue_in_a_weighted_step() -> None:
    weighted = steps(weights=[20, 100])[0]
    seq = command_seq(0, 1)
    reports = []
    for thing in ("pi-1", "pi-2", "jet-1"):
        for i, n in enumerate((1, 201)):
            reports.append(report(thing, 100 + i, {
                "blue": vm("digits-v1", counts({30: 4 * n}), seq=seq),
                "green": vm("digits-v2", counts({33: n}), seq=seq)}))
    ok = evaluate(limits(max_p99_ratio=2.0), reports, step=weighted)
    assert ok.status == "pass"
    tight = evaluate(limits(max_p99_ratio=1.5), reports, step=weighted)
    assert tight.status == "breach" and tight.breach is not None
    assert tight.breach.rule == "p99_ratio" and 1.5 < tight.breach.observed < 2.0


def test_ratio_against_baseline_after_a_promote() -> None:
    (step,) = steps()
    seq = command_seq(0, 1)
    green = [m for t in ("pi-1", "pi-2", "jet-1")
             for m in green_pair(t, {30: 1}, {40: 300}, step_seq=seq)]
    baseline = [report(t, 1 + i, {"blue": vm("digits-v1", counts({30: 1 + 300 * i}),
                                             seq=None, rollout=None)})
                for t in ("pi-1", "pi-2", "jet-1") for i in (0, 1)]
    verdict = evaluate(limits(max_p99_ratio=2.0), green, step=step, baseline=baseline)
    assert verdict.status == "breach" and verdict.breach is not None
    assert verdict.breach.rule == "p99_ratio"
    assert evaluate(limits(max_p99_ratio=2.0), green, step=step).status == "pass"  # no blue


def test_ratio_breach_needs_a_real_excess_over_blue() -> None:
    """A microsecond model at 3-4x of blue on a busy device is jitter, not a slow build."""
    weighted = steps(weights=[20, 100])[0]
    seq = command_seq(0, 1)
    reports = [report(thing, 100 + i, {
        "blue": vm("digits-v1", counts({20: 4 * n}), seq=seq),     # ~100 us
        "green": vm("digits-v2", counts({25: n}), seq=seq)})       # ~300 us
        for thing in ("pi-1", "pi-2", "jet-1") for i, n in enumerate((1, 201))]
    assert evaluate(limits(max_p99_ratio=2.0), reports, step=weighted).status == "pass"
    strict = evaluate(limits(max_p99_ratio=2.0, min_p99_excess_us=0), reports, step=weighted)
    assert strict.status == "breach" and strict.breach is not None
    assert strict.breach.rule == "p99_ratio" and strict.breach.observed > 2.0


def test_needs_min_samples_and_min_devices() -> None:
    (step,) = steps()
    seq = command_seq(0, 1)
    reports = [m for t in ("pi-1", "pi-2", "jet-1")
               for m in green_pair(t, {30: 1}, {30: 60}, step_seq=seq)]
    assert evaluate(limits(), reports, step=step).status == "insufficient"  # jet: 60 < 100
    assert evaluate(limits(min_samples=50), reports, step=step).status == "pass"
    verdict = evaluate(limits(min_samples=50, min_devices=2), reports, step=step)
    assert verdict.status == "insufficient" and verdict.short == ("class:jetson_nano",)
    # one report per series gives no window yet
    assert evaluate(limits(min_samples=1), reports[1::2], step=step).status == "insufficient"


def test_error_rate_agreement_proxy_health_and_installs() -> None:
    shadow = steps(shadow={"duration_s": 60, "sample_rate": 1.0})[0]
    seq = command_seq(0, 1)
    reports = []
    for thing in ("pi-1", "pi-2", "jet-1"):
        for i, n in enumerate((0, 200)):
            errors = 10 if thing == "jet-1" and i else 0
            reports.append(report(thing, 200 + i, {
                "blue": vm("digits-v1", counts({30: n}), seq=seq, checked=n, correct=n),
                "green": vm("digits-v2", counts({30: n}), seq=seq, errors=errors,
                            checked=n, correct=int(n * 0.8))},
                health=HealthReport(soc_temp_c=85.0 if thing == "pi-2" else 50.0,
                                    rss_bytes=10**9 if thing == "pi-1" else 10**6)))
    verdict = evaluate(limits(max_error_rate=0.01), reports, step=shadow)
    assert verdict.status == "breach"
    assert [(b.rule, b.where) for b in verdict.breaches] == [
        ("error_rate", "class:jetson_nano"), ("error_rate", "group:garage")]
    verdict = evaluate(limits(min_agreement=0.9), reports, step=shadow)
    assert verdict.breach is not None and verdict.breach.rule == "agreement"
    assert abs(verdict.breach.observed - 0.8) < 1e-9
    verdict = evaluate(limits(max_soc_temp_c=80, max_rss_bytes=10**8), reports[1::2],
                       step=shadow)  # health needs no samples
    assert {(b.rule, b.where) for b in verdict.breaches} == {
        ("soc_temperature", "device:pi-2"), ("rss", "device:pi-1")}

    installs = {"pi-1": True, "pi-2": False, "jet-1": True}
    verdict = evaluate(limits(install_failure_pct=40, install_failure_min_devices=2), [],
                       step=shadow, installs=installs)
    assert {(b.rule, b.where) for b in verdict.breaches} == {
        ("install_failures", "class:rasp4b"), ("install_failures", "group:garage"),
        ("install_failures", "group:kitchen")}
    verdict = evaluate(limits(install_failure_pct=40, install_failure_min_devices=3), [],
                       step=shadow, installs=installs)
    assert verdict.status == "insufficient"  # too few tried in any scope to judge
