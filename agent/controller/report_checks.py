"""Metrics reports that cannot be true, refused before any guardrail reads them.

What the schema refuses already (:mod:`agent.wire.messages`, :mod:`agent.wire.codec`),
so that such a report never decodes: a negative count, a count above 2^63 - 1, NaN or
Infinity anywhere (the codec refuses the constants, the schema non-finite floats), an
unknown bucket layout, a bucket list of the wrong length for its layout, and
``inferences_total`` other than the sum of the bucket counts.

What :class:`MetricsHistory` refuses at ingest, with the reason it is counted under:

``count_out_of_range``
    a count or total above :data:`MAX_COUNT` (2^53): a device making a million
    inferences a second would take 285 years to get there, and past it the float
    arithmetic of quantiles and rates is no longer exact.
``counts_decreased``
    a bucket count lower than in the previous report of the same series (the same
    thing, variant, boot and ``series``): cumulative counts never go down within one.
``totals_decreased``
    ``inferences_total`` or ``errors_total`` lower than before in the same series.
``totals_inconsistent``
    more correct top-1 answers than checked ones.
``series_went_back``
    a ``series`` lower than one the same boot reported already for the variant.
``buckets_changed``
    another bucket layout within one series.

The history keeps, per thing and variant, the newest accepted series only (bounded by
the number of devices); a report of a new boot starts afresh. Reports reach it in
``seq`` order (:class:`~agent.wire.senders.SenderTracker` drops older ones first), so an
earlier report arriving late is refused as stale before it could look like a decrease.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.controller.errors import ReportRejectedError
from agent.wire.messages import Metrics, VariantMetrics

MAX_COUNT = 2**53
COUNT_OUT_OF_RANGE = "count_out_of_range"
COUNTS_DECREASED = "counts_decreased"
TOTALS_DECREASED = "totals_decreased"
SERIES_WENT_BACK = "series_went_back"
BUCKETS_CHANGED = "buckets_changed"
TOTALS_INCONSISTENT = "totals_inconsistent"
# The totals a device's series guarantees never go down (it starts a new series when
# either would); the labelled-check totals are read as windows clamped at 0 instead.
_TOTALS = ("inferences_total", "errors_total")


@dataclass(frozen=True)
class _Series:
    boot_id: str
    series: int
    version: str
    counts: tuple[int, ...]
    totals: tuple[int, ...]


class MetricsHistory:
    """The last accepted series of each (thing, variant); not thread-safe (the
    controller's lock)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], _Series] = {}

    def check(self, report: Metrics) -> None:
        """Raise :class:`ReportRejectedError` if ``report`` cannot follow what its thing
        reported before; otherwise remember it."""
        seen: dict[tuple[str, str], _Series] = {}
        for variant, vm in report.variants.items():
            _check_ranges(variant, vm)
            now = _Series(report.boot_id, vm.series, vm.buckets.version,
                          tuple(vm.buckets.counts), tuple(getattr(vm, n) for n in _TOTALS))
            before = self._last.get((report.thing, variant))
            if before is not None and before.boot_id == report.boot_id:
                _check_follows(variant, before, now)
            seen[(report.thing, variant)] = now
        if report.requests is not None:
            _check_request_ranges(report)
        self._last.update(seen)

    def forget(self, thing: str) -> None:
        for key in [k for k in self._last if k[0] == thing]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


def _check_ranges(variant: str, vm: VariantMetrics) -> None:
    values = [*vm.buckets.counts, vm.inferences_total, vm.errors_total, vm.checked_total,
              vm.correct_total, vm.inferences, vm.errors, vm.series]
    if max(values) > MAX_COUNT:
        raise ReportRejectedError(COUNT_OUT_OF_RANGE,
                                  f"{variant}: a count above 2^53 ({max(values)})")
    if vm.correct_total > vm.checked_total:
        raise ReportRejectedError(TOTALS_INCONSISTENT, f"{variant}: correct_total "
                                  f"{vm.correct_total} above checked_total {vm.checked_total}")


def _check_request_ranges(report: Metrics) -> None:
    requests = report.requests
    assert requests is not None
    values = [requests.served_total, requests.failed_total, requests.busy_total,
              requests.expired_total, requests.abandoned_total, *requests.latency.counts,
              *requests.by_variant.values()]
    if max(values) > MAX_COUNT:
        raise ReportRejectedError(COUNT_OUT_OF_RANGE,
                                  f"requests: a count above 2^53 ({max(values)})")


def _check_follows(variant: str, before: _Series, now: _Series) -> None:
    if now.series < before.series:
        raise ReportRejectedError(SERIES_WENT_BACK, f"{variant}: series {now.series} after "
                                  f"{before.series} in boot {now.boot_id}")
    if now.series != before.series:
        return  # the variant's counters restarted: a new series starts from anything
    if now.version != before.version:
        raise ReportRejectedError(BUCKETS_CHANGED, f"{variant}: buckets {now.version!r} "
                                  f"after {before.version!r} in one series")
    for i, (was, count) in enumerate(zip(before.counts, now.counts, strict=True)):
        if count < was:
            raise ReportRejectedError(COUNTS_DECREASED, f"{variant}: bucket {i} went from "
                                      f"{was} to {count} in one series")
    for name, was, total in zip(_TOTALS, before.totals, now.totals, strict=True):
        if total < was:
            raise ReportRejectedError(TOTALS_DECREASED,
                                      f"{variant}: {name} went from {was} to {total}")
