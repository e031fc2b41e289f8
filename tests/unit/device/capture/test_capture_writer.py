"""The capture writer thread: offers never block, a full queue is counted, a failing disk
is counted and logged once a minute at most, and the thread survives it."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.device.capture.config import BatchConfig
from agent.device.capture.record import Capture
from agent.device.capture.store import CaptureStore
from agent.device.capture.writer import CaptureWriter

NOW = 1_760_000_000.0


def make_capture(frame: int) -> Capture:
    return Capture(thing="dev-1", model="digits", rule="sample",
                   inputs={"x": np.full(64, frame, dtype=np.float32)}, outputs={},
                   variants={"blue": "v1"}, served_by="blue", frame_id=frame, time=NOW)


class GatedStore(CaptureStore):
    """A real store whose puts wait for a gate (a slow disk)."""

    gate: threading.Event
    entered: threading.Event

    def put(self, capture: Capture) -> bool:
        self.entered.set()
        self.gate.wait(10)
        return super().put(capture)


def new_store(root: Path, cls: type[CaptureStore] = CaptureStore,
              clock: list[float] | None = None) -> CaptureStore:
    now = clock or [NOW]
    return cls(root, thing="dev-1", model="digits", budget_bytes=1 << 22,
               max_per_hour=100_000, max_capture_bytes=1 << 20,
               batch=BatchConfig(max_captures=64, max_age_seconds=5),
               clock=lambda: now[0])


def test_a_full_queue_is_counted_and_offer_never_blocks(tmp_path: Path) -> None:
    store = new_store(tmp_path, GatedStore)
    assert isinstance(store, GatedStore)
    store.gate, store.entered = threading.Event(), threading.Event()
    writer = CaptureWriter(store, queue_size=4)
    writer.start()
    assert writer.offer(make_capture(0))
    assert store.entered.wait(5)  # the thread holds capture 0 in a slow put
    started = time.monotonic()
    results = [writer.offer(make_capture(i)) for i in range(1, 11)]
    assert time.monotonic() - started < 0.5
    assert results == [True] * 4 + [False] * 6
    assert store.counts().dropped_queue == 6
    store.gate.set()
    assert writer.flush(10)
    assert store.counts().stored == 5 and store.counts().dropped_queue == 6
    assert writer.stop(5)
    assert not writer.offer(make_capture(99))  # stopped: refused, counted
    assert store.counts().dropped_queue == 7


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    writer = CaptureWriter(store, queue_size=64)
    writer.start()
    for i in range(30):
        assert writer.offer(make_capture(i))
    assert writer.stop(10)
    assert store.counts().stored == 30
    assert len(list((tmp_path / "open").iterdir())) == 30


def test_the_thread_seals_due_batches_by_itself(tmp_path: Path) -> None:
    clock = [NOW]
    store = new_store(tmp_path, clock=clock)
    writer = CaptureWriter(store, queue_size=8, seal_interval_s=0.05)
    writer.start()
    try:
        writer.offer(make_capture(1))
        assert writer.flush(5)
        clock[0] += 6  # older than max_age_seconds
        deadline = time.monotonic() + 5
        while not store.batches() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [b.count for b in store.batches()] == [1]
    finally:
        writer.stop(5)


def test_a_failing_disk_is_counted_logged_once_and_survived(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = new_store(tmp_path)
    writer = CaptureWriter(store, queue_size=64, seal_interval_s=0.05)
    writer.start()
    try:
        assert writer.offer(make_capture(0)) and writer.flush(5)
        shutil.rmtree(tmp_path / "open")
        (tmp_path / "open").write_text("not a directory")  # every write now fails
        with caplog.at_level(logging.WARNING, logger="edge_agent.capture.writer"):
            for i in range(1, 11):
                writer.offer(make_capture(i))
            assert writer.flush(5)
        counts = store.counts()
        assert counts.write_errors >= 10 and counts.stored == 1
        assert counts.last_write_error is not None
        assert "NotADirectoryError" in counts.last_write_error
        warnings = [r for r in caplog.records if r.name == "edge_agent.capture.writer"]
        assert len(warnings) == 1 and "cannot store a capture" in warnings[0].getMessage()
        (tmp_path / "open").unlink()
        (tmp_path / "open").mkdir()  # the disk is back: the same thread writes again
        assert writer.offer(make_capture(20)) and writer.flush(5)
        assert store.counts().stored == 2
        assert writer.is_alive()
    finally:
        assert writer.stop(5)
