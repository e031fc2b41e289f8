"""Per-variant metrics bodies, and the histogram arithmetic the controller needs.

Recording stays on the inference path: the loop increments its histogram's
``counts`` list in place. At report time :class:`MetricsReporter` copies that
list once (``list(counts)`` is a single C-level copy under the GIL, so it is a
consistent snapshot even while the loop runs) and never writes to it.

A report carries the counts **cumulative** since the series began, so:

- the controller diffs two consecutive reports of one ``(boot_id, variant,
  series)`` to get any window, even across lost reports (:func:`diff_counts`);
- devices merge exactly by adding counts (:func:`merge_counts`);
- quantiles of a window come from the diff (:func:`window_quantiles`).

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

from agent.core.histogram import BUCKETS_VERSION, edges_for, quantile_us
from agent.wire.fields import Variant
from agent.wire.messages import Buckets, VariantMetrics

REPORTED_QUANTILES = (0.5, 0.9, 0.99)


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
              or errors < prev.errors or _decreased(prev.counts, counts)):
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


def diff_counts(prev: Sequence[int], cur: Sequence[int]) -> list[int]:
    """Counts recorded between two cumulative snapshots of one series."""
    if len(prev) != len(cur):
        raise ValueError(f"snapshots have {len(prev)} and {len(cur)} buckets")
    if _decreased(prev, cur):
        raise ValueError("counts decreased: the snapshots are not of one series")
    return [c - p for p, c in zip(prev, cur, strict=True)]


def merge_counts(counts: Iterable[Sequence[int]]) -> list[int]:
    """Bucket-wise sum: the exact histogram of all the inputs' inferences together."""
    merged: list[int] = []
    for one in counts:
        if not merged:
            merged = list(one)
            continue
        if len(one) != len(merged):
            raise ValueError(f"cannot merge {len(one)} buckets into {len(merged)}")
        for i, count in enumerate(one):
            merged[i] += count
    return merged


def quantiles_of(counts: Sequence[int], quantiles: Sequence[float] = REPORTED_QUANTILES, *,
                 version: str = BUCKETS_VERSION) -> tuple[float | None, ...]:
    """Quantiles in microseconds (None for an empty histogram), as the loop computes them."""
    edges = edges_for(version)
    if len(counts) != len(edges) + 1:
        raise ValueError(f"{version} needs {len(edges) + 1} counts, got {len(counts)}")
    if not any(counts):
        return tuple(None for _ in quantiles)
    return tuple(round(quantile_us(counts, edges, q), 3) for q in quantiles)


def window_quantiles(prev: Sequence[int], cur: Sequence[int],
                     quantiles: Sequence[float] = REPORTED_QUANTILES, *,
                     version: str = BUCKETS_VERSION) -> tuple[float | None, ...]:
    """Quantiles of the inferences between two cumulative snapshots."""
    return quantiles_of(diff_counts(prev, cur), quantiles, version=version)


def _decreased(prev: Sequence[int], cur: Sequence[int]) -> bool:
    return len(prev) != len(cur) or any(c < p for p, c in zip(prev, cur, strict=True))
