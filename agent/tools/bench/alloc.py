"""Bytes the Python allocators hand out per call of a loop body.

tracemalloc's peak is reset before each call and compared with the traced size
before it, so a temporary that is freed again within the call still counts.
numpy reports its data buffers to tracemalloc too, so a stray array shows up.
"""

from __future__ import annotations

import statistics
import tracemalloc
from collections.abc import Callable


def bytes_per_call(body: Callable[[], object], *, calls: int = 2000, warmup: int = 200) -> float:
    """Mean over ``calls`` of (peak traced bytes during one call - traced bytes before it).

    The mean, not the median, so that work done on every Nth call is charged too.
    """
    for _ in range(warmup):
        body()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        samples = []
        get, reset = tracemalloc.get_traced_memory, tracemalloc.reset_peak
        for _ in range(warmup):
            body()
        for _ in range(calls):
            # Read the baseline before resetting the peak, so the tuple that
            # get_traced_memory() itself returns is not counted against the body.
            before = get()[0]
            reset()
            body()
            samples.append(get()[1] - before)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return statistics.fmean(samples)
