"""Capture store write rate on this disk: captures (and MB) per second through
:meth:`~agent.device.capture.store.CaptureStore.put`, each one encoded, written,
fsynced and renamed, plus the time to seal a batch.

Used by ``edge-agent bench capture``. It depends on the disk's fsync latency (two per
put: the file and its directory) and the machine, so it is printed, never asserted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.device.capture.config import BatchConfig
from agent.device.capture.record import Capture, encode
from agent.device.capture.store import CaptureStore

BATCH_CAPTURES = 64


def _capture(frame: int, tensor: np.ndarray) -> Capture:
    return Capture(thing="bench", model="bench", rule="sample", inputs={"input": tensor},
                   outputs={}, variants={"blue": "bench"}, served_by="blue",
                   frame_id=frame, time=time.time())


def measure_store(root: Path, *, seconds: float, capture_bytes: int) -> dict[str, Any]:
    """Put captures of ``capture_bytes`` tensor bytes for ``seconds`` into a fresh store
    under ``root`` (deleted afterwards), sealing a batch every 64; the budget and the
    hourly cap are lifted so that every put writes."""
    if seconds <= 0 or capture_bytes < 4:
        raise ValueError("seconds must be positive and capture_bytes at least 4")
    store_root = root / "capture-store-bench"
    shutil.rmtree(store_root, ignore_errors=True)
    tensor = np.random.default_rng(0).random(capture_bytes // 4, dtype=np.float32)
    file_bytes = len(encode(_capture(0, tensor)))
    store = CaptureStore(store_root, thing="bench", model="bench", budget_bytes=1 << 62,
                         max_per_hour=1 << 62, max_capture_bytes=capture_bytes,
                         batch=BatchConfig(max_captures=100_000, max_bytes=1 << 62))
    seal_s: list[float] = []
    puts = 0
    try:
        started = time.perf_counter()
        put_s = 0.0
        while time.perf_counter() - started < seconds:
            capture = _capture(puts, tensor)
            before = time.perf_counter()
            if not store.put(capture):
                raise RuntimeError(f"the bench store refused a capture: {store.counts()}")
            put_s += time.perf_counter() - before
            puts += 1
            if puts % BATCH_CAPTURES == 0:
                before = time.perf_counter()
                store.seal()
                seal_s.append(time.perf_counter() - before)
    finally:
        shutil.rmtree(store_root, ignore_errors=True)
    return {
        "seconds": round(put_s, 3), "captures": puts, "capture_bytes": capture_bytes,
        "file_bytes": file_bytes,
        "captures_per_s": round(puts / put_s, 1) if put_s else 0.0,
        "mb_per_s": round(puts * file_bytes / put_s / 1e6, 2) if put_s else 0.0,
        "batches": len(seal_s), "batch_captures": BATCH_CAPTURES,
        "seal_ms_per_batch": round(1000 * sum(seal_s) / len(seal_s), 2) if seal_s else None,
    }
