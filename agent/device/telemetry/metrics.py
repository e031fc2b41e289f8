"""Per-variant metrics bodies, built on the histogram arithmetic of :mod:`agent.core.histogram`.

Recording stays on the inference path: the loop increments its histogram's
``counts`` list in place. At report time :class:`MetricsReporter` copies that
list once (``list(counts)`` is a single C-level copy under the GIL, so it is a
consistent snapshot even while the loop runs) and never writes to it.

A report carries the counts **cumulative** since the series began, so:

- the controller diffs two consecutive reports of one ``(boot_id, variant,
  series)`` to get any window, even across lost reports
  (:func:`~agent.core.histogram.diff_counts`);
- devices merge exactly by adding counts (:func:`~agent.core.histogram.merge_counts`);
- quantiles of a window come from the diff
  (:func:`~agent.core.histogram.window_quantiles`).

``series`` starts at 0 and is bumped when a variant's counters restart inside a
boot (its histogram object was replaced, or a count went down); within a series
counts never decrease. The device also sends its own window figures (the time
since its previous report) for consumers that keep no history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.core.histogram import (
    REPORTED_QUANTILES,
    counts_decreased,
    diff_counts,
    quantiles_of,
)
from agent.wire.fields import Variant
from agent.wire.messages import Buckets, RequestMetrics, VariantMetrics


class HistogramLike(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def counts(self) -> Sequence[int]: ...


class StatsLike(Protocol):
    """What the reporter reads of a loop's stats (``runner.LoopStats`` fits)."""

    @property
    def errors(self) -> int: ...

    @property
    def checked(self) -> int: ...

    @property
    def correct(self) -> int: ...

    @property
    def histogram(self) -> HistogramLike: ...


@dataclass(frozen=True, kw_only=True)
class VariantSource:
    """One variant to report: its loop stats and what it serves."""

    variant: Variant
    model_version: str
    stats: StatsLike
    rollout_id: str | None = None
    rollout_seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    histogram: HistogramLike  # identity tells a replaced histogram from a continued one
    version: str
    counts: list[int]
    errors: int
    at: float
    series: int


class MetricsReporter:
    """Builds each variant's metrics body; keeps the previous snapshot per variant."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._previous: dict[Variant, _Snapshot] = {}

    def report(self, sources: Iterable[VariantSource], *,
               now: float | None = None) -> dict[Variant, VariantMetrics]:
        at = self._clock() if now is None else now
        bodies: dict[Variant, VariantMetrics] = {}
        for source in sources:
            bodies[source.variant] = self._report_one(source, at)
        return bodies

    def _report_one(self, source: VariantSource, at: float) -> VariantMetrics:
        stats = source.stats
        histogram = stats.histogram
        counts = list(histogram.counts)  # the only touch of the hot-path list: one read
        errors = stats.errors
        version = histogram.version
        prev = self._previous.get(source.variant)
        if prev is None:
            series, base, base_errors, since = 0, [0] * len(counts), 0, self._started
        elif (prev.histogram is not histogram or prev.version != version
              or errors < prev.errors or counts_decreased(prev.counts, counts)):
            series, base, base_errors, since = prev.series + 1, [0] * len(counts), 0, prev.at
        else:
            series, base, base_errors, since = prev.series, prev.counts, prev.errors, prev.at
        self._previous[source.variant] = _Snapshot(
            histogram=histogram, version=version, counts=counts, errors=errors, at=at,
            series=series)

        window = diff_counts(base, counts)
        window_s = max(at - since, 0.0)
        inferences = sum(window)
        p50, p90, p99 = quantiles_of(window, REPORTED_QUANTILES, version=version)
        return VariantMetrics(
            model_version=source.model_version,
            rollout_id=source.rollout_id,
            rollout_seq=source.rollout_seq,
            series=series,
            inferences_total=sum(counts),
            errors_total=errors,
            checked_total=stats.checked,
            correct_total=stats.correct,
            buckets=Buckets(version=version, counts=counts),
            window_s=round(window_s, 3),
            inferences=inferences,
            errors=errors - base_errors,
            throughput_per_s=round(inferences / window_s, 3) if window_s > 0 else 0.0,
            p50_us=p50,
            p90_us=p90,
            p99_us=p99,
        )


class RequestStatsLike(Protocol):
    """What :func:`request_metrics` reads (``inference.requests.RequestStats`` fits)."""

    served: int
    failed: int
    busy: int
    expired: int
    abandoned: int
    by_variant: dict[str, int]

    @property
    def latency(self) -> HistogramLike: ...

    @property
    def queue(self) -> HistogramLike: ...


def request_metrics(stats: RequestStatsLike) -> RequestMetrics | None:
    """The local API's cumulative figures; None while it has seen no request at all."""
    if not (stats.served or stats.failed or stats.busy or stats.expired or stats.abandoned):
        return None
    counts = list(stats.latency.counts)
    version = stats.latency.version
    p50, p99 = quantiles_of(counts, (0.5, 0.99), version=version)
    (queue_p99,) = quantiles_of(list(stats.queue.counts), (0.99,), version=version)
    return RequestMetrics(
        served_total=stats.served, failed_total=stats.failed, busy_total=stats.busy,
        expired_total=stats.expired, abandoned_total=stats.abandoned,
        by_variant={variant: stats.by_variant[variant] for variant in ("blue", "green")
                    if variant in stats.by_variant},
        latency=Buckets(version=version, counts=counts), p50_us=p50, p99_us=p99,
        queue_p99_us=queue_p99)
