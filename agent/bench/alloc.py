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
    """Median over ``calls`` of (peak traced bytes during one call - traced bytes before it)."""
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
            reset()
            before = get()[0]
            body()
            samples.append(get()[1] - before)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return float(statistics.median(samples))
