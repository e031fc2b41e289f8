"""Latency histograms: the fixed, versioned bucket edges and all arithmetic on counts.

The edges are a wire contract (a metrics report names its ``buckets.version`` and sends
one count per bucket), so the device, the fleet controller and the tools share this one
module for them and for what is computed from counts:

- :class:`LatencyHistogram` records on the inference path;
- :func:`diff_counts` gives the counts of a window between two cumulative snapshots of
  one series, :func:`counts_decreased` tells when two snapshots are not of one series;
- :func:`merge_counts` merges histograms of many reports or devices exactly;
- :func:`quantile_us`, :func:`quantiles_of` and :func:`window_quantiles` read
  quantiles from counts.

Counts are kept per bucket so histograms from many inferences, reports or
devices merge exactly by adding counts, which averaged percentiles never do.
Recording a value is a bisect on a tuple and one list increment (the loop does
exactly that inline, on :attr:`LatencyHistogram.edges_ns` and ``counts``):
nothing is allocated that outlives the call.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Upper bucket edges in microseconds: 10 per decade (ratio ~1.26) from 1 us to
# ~63 s, rounded to 3 significant digits. Changing them means a new version.
BUCKETS_VERSION = "log10x10-v1"
BUCKET_EDGES_US: tuple[float, ...] = tuple(
    float(f"{10 ** (k / 10):.3g}") for k in range(0, 79)
)
REPORTED_QUANTILES = (0.5, 0.9, 0.99)  # the p50, p90 and p99 of a metrics report


def edges_for(version: str) -> tuple[float, ...]:
    if version != BUCKETS_VERSION:
        raise ValueError(f"unknown histogram bucket version {version!r}")
    return BUCKET_EDGES_US


@dataclass
class LatencyHistogram:
    """Cumulative latency counts; the last bucket holds everything above the top edge."""

    version: str = BUCKETS_VERSION

    def __post_init__(self) -> None:
        self.edges_us = edges_for(self.version)
        # Edges in integer nanoseconds so recording compares ints with ints.
        self.edges_ns = tuple(int(edge * 1000) for edge in self.edges_us)
        self.counts: list[int] = [0] * (len(self.edges_us) + 1)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def record_ns(self, value_ns: int) -> None:
        self.counts[bisect.bisect_left(self.edges_ns, value_ns)] += 1

    def merge(self, other: LatencyHistogram) -> None:
        if other.version != self.version:
            raise ValueError(f"cannot merge {other.version} into {self.version}")
        for i, count in enumerate(other.counts):
            self.counts[i] += count

    def reset(self) -> None:
        for i in range(len(self.counts)):
            self.counts[i] = 0

    def quantile_us(self, q: float) -> float:
        return quantile_us(self.counts, self.edges_us, q)

    def mean_us(self) -> float:
        """Mean estimated from bucket midpoints (exact sums would cost the hot path)."""
        total = self.total
        if not total:
            return 0.0
        edges = (0.0, *self.edges_us)
        mids = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        mids.append(self.edges_us[-1])
        return sum(c * m for c, m in zip(self.counts, mids, strict=True)) / total


def quantile_us(counts: Sequence[int], edges_us: Sequence[float], q: float) -> float:
    """The q-quantile, interpolated linearly inside its bucket (Prometheus' rule).

    Values in the overflow bucket are reported as the top edge.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must lie in [0, 1]")
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(edges_us):
                return edges_us[-1]
            lower = edges_us[i - 1] if i > 0 else 0.0
            return lower + (edges_us[i] - lower) * ((rank - seen) / count)
        seen += count
    return edges_us[-1]


def diff_counts(prev: Sequence[int], cur: Sequence[int]) -> list[int]:
    """Counts recorded between two cumulative snapshots of one series."""
    if len(prev) != len(cur):
        raise ValueError(f"snapshots have {len(prev)} and {len(cur)} buckets")
    if counts_decreased(prev, cur):
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


def counts_decreased(prev: Sequence[int], cur: Sequence[int]) -> bool:
    """True when ``cur`` cannot follow ``prev`` in one series (other length, a count down)."""
    return len(prev) != len(cur) or any(c < p for p, c in zip(prev, cur, strict=True))
