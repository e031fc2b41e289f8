"""Local guardrails: the device rolls green back by itself, with no cloud round trip.

Evaluated off the inference path (the agent's schedule thread) over green's
samples since it was loaded, against blue's samples over the same period.
Nothing is judged before ``min_samples`` green inferences (or shadow
comparisons) exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent.core.histogram import diff_counts, quantile_us
from agent.device.inference.router import VariantRouter


class Guardrails(BaseModel):
    """Limits for a candidate; None switches a limit off. Keys are camelCase in config."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    min_samples: int = Field(default=200, ge=1)
    max_green_p99_us: float | None = Field(default=None, gt=0)
    max_green_p99_ratio: float | None = Field(default=3.0, gt=0,
                                              description="green p99 / blue p99")
    min_p99_excess_us: float = Field(
        default=500.0, ge=0,
        description="a ratio breach also needs green's p99 this far above blue's: for a "
                    "model that runs in microseconds, scheduler jitter alone moves the ratio")
    max_error_rate: float | None = Field(default=0.01, ge=0, le=1)
    min_agreement: float | None = Field(default=0.9, ge=0, le=1,
                                        description="shadow top-1 agreement with blue")
    max_rss_bytes: int | None = Field(default=None, gt=0)
    max_soc_temp_c: float | None = Field(default=None)


@dataclass(frozen=True)
class Breach:
    rule: str
    detail: str
    observed: float
    limit: float


def evaluate(router: VariantRouter, limits: Guardrails, *, rss_bytes: int | None = None,
             soc_temp_c: float | None = None) -> Breach | None:
    """The first limit green breaks, or None (also None while samples are too few)."""
    green = router.green
    if green is None:
        return None
    if limits.max_rss_bytes is not None and rss_bytes is not None \
            and rss_bytes > limits.max_rss_bytes:
        return Breach("rss", f"agent RSS {rss_bytes} B over {limits.max_rss_bytes} B",
                      rss_bytes, limits.max_rss_bytes)
    if limits.max_soc_temp_c is not None and soc_temp_c is not None \
            and soc_temp_c > limits.max_soc_temp_c:
        return Breach("soc_temperature", f"SoC at {soc_temp_c:.1f} C, limit "
                      f"{limits.max_soc_temp_c:.1f} C", soc_temp_c, limits.max_soc_temp_c)
    shadow = router.shadow_stats
    if router.mode == "shadow" and limits.min_agreement is not None \
            and shadow.compared >= limits.min_samples:
        agreement = shadow.agreement or 0.0
        if agreement < limits.min_agreement:
            return Breach("agreement", f"green agrees with blue on {agreement:.1%} of "
                          f"{shadow.compared} inputs (min {limits.min_agreement:.0%})",
                          agreement, limits.min_agreement)
    stats = green.lane.stats
    served = stats.inferences
    attempts = served + stats.errors
    if attempts < limits.min_samples:
        return None
    if limits.max_error_rate is not None and stats.errors / attempts > limits.max_error_rate:
        rate = stats.errors / attempts
        return Breach("error_rate", f"green failed {stats.errors} of {attempts} inferences "
                      f"({stats.last_error})"[:400], rate, limits.max_error_rate)
    if served < limits.min_samples:
        return None
    edges = stats.histogram.edges_us
    green_p99 = quantile_us(stats.histogram.counts, edges, 0.99)
    if limits.max_green_p99_us is not None and green_p99 > limits.max_green_p99_us:
        return Breach("p99_latency", f"green p99 {green_p99:.0f} us over "
                      f"{limits.max_green_p99_us:.0f} us", green_p99, limits.max_green_p99_us)
    if limits.max_green_p99_ratio is not None:
        blue_window = diff_counts(green.baseline, router.blue.lane.stats.histogram.counts) \
            if green.baseline else list(router.blue.lane.stats.histogram.counts)
        if sum(blue_window) >= limits.min_samples:
            blue_p99 = quantile_us(blue_window, edges, 0.99)
            ratio = green_p99 / blue_p99 if blue_p99 > 0 else float("inf")
            if ratio > limits.max_green_p99_ratio and \
                    green_p99 - blue_p99 > limits.min_p99_excess_us:
                return Breach("p99_latency_ratio", f"green p99 {green_p99:.0f} us is "
                              f"{ratio:.1f}x blue's {blue_p99:.0f} us (max "
                              f"{limits.max_green_p99_ratio:.1f}x)", ratio,
                              limits.max_green_p99_ratio)
    return None
