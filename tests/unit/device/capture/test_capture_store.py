"""The capture store: the budget and the per-hour cap under an accelerated run, sealing,
uploads, recovery at open, and its counters."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.device.capture import batches as batches_module
from agent.device.capture.batches import BATCH_FILE, MANIFEST_FILE, read_batch, verify_batch
from agent.device.capture.config import BatchConfig
from agent.device.capture.record import Capture, decode, encode
from agent.device.capture.store import CaptureStore


class Clock:
    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_capture(frame: int, when: float, floats: int = 256) -> Capture:
    data = np.full(floats, frame % 997, dtype=np.float32)
    return Capture(thing="dev-1", model="digits", rule="sample", inputs={"x": data},
                   outputs={"blue": {"scores": np.arange(10, dtype=np.float32)}},
                   variants={"blue": "v1"}, served_by="blue", frame_id=frame, time=when)


def open_store(root: Path, clock: Clock, *, budget: int = 1 << 20, per_hour: int = 100_000,
               max_capture: int = 1 << 20, batch: BatchConfig | None = None) -> CaptureStore:
    return CaptureStore(root, thing="dev-1", model="digits", budget_bytes=budget,
                        max_per_hour=per_hour, max_capture_bytes=max_capture,
                        batch=batch or BatchConfig(max_captures=8, max_bytes=64 * 1024,
                                                   max_age_seconds=30), clock=clock)


def disk_use(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root)
               for f in files)


def ids_on_disk(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in [*os.walk(root / "open"), *os.walk(root / "batches")]:
        for name in files:
            if name.endswith(".npz"):
                found.append(decode(Path(dirpath, name).read_bytes()).capture_id)
    return found


def test_budget_and_hourly_cap_hold_over_ten_accelerated_minutes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The budget's arithmetic, checked against the real files after every change; the
    # fsyncs are lifted here (a loaded CI disk takes ms each), the kill test has them.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    clock = Clock()
    budget, per_hour = 64 * 1024, 600
    batch = BatchConfig(max_captures=16, max_bytes=12 * 1024, max_age_seconds=20)
    store = open_store(tmp_path, clock, budget=budget, per_hour=per_hour, batch=batch)
    stored_ids: list[str] = []
    offered = peak = 0
    pinned: str | None = None
    for tick in range(600 * 20):  # 20 captures a second for 600 simulated seconds
        clock.now += 0.05
        offered += 1
        capture = make_capture(tick, clock.now)
        changed = store.put(capture)
        if changed:
            stored_ids.append(capture.capture_id)
        if tick % 20 == 0:
            changed = bool(store.seal_due()) or changed
        if tick == 3000:  # an upload starts on the oldest batch, and takes long
            pinned = store.batches()[0].batch_id
            store.verify_batch(pinned)
        if tick == 9000 and pinned is not None:
            store.mark_uploaded(pinned)
            pinned = None
        if changed:  # the disk changes only when a capture is stored or sealed
            used = disk_use(tmp_path)
            slack = 0
            if pinned is not None:
                slack = sum(os.path.getsize(p) for p in store.batch_dir(pinned).iterdir())
                assert slack <= batch.max_bytes + 8 * 1024  # captures + manifest
            assert used <= budget + slack, f"{used} bytes on disk at tick {tick}"
            assert store.counts().bytes_on_disk == used
            peak = max(peak, used)
    counts = store.counts()
    print(f"{offered} offered in 600 simulated s: {counts.stored} stored, "
          f"{counts.dropped_rate} over the hourly cap, {counts.dropped_budget} evicted; "
          f"peak {peak} bytes on disk for a {budget}-byte budget")
    expected_stored = per_hour + 600 * per_hour / 3600
    assert abs(counts.stored - expected_stored) <= 2, counts
    assert counts.stored == len(stored_ids)
    assert counts.stored + counts.dropped_rate + counts.too_large == offered
    assert counts.dropped_rate == offered - counts.stored and counts.too_large == 0
    assert counts.dropped_budget > 500 and counts.uploaded_batches == 1
    survivors = ids_on_disk(tmp_path)
    assert len(survivors) == len(set(survivors))
    assert len(survivors) == counts.stored - counts.dropped_budget - counts.uploaded_captures
    assert set(survivors) == set(stored_ids[-len(survivors):]), "the newest must survive"
    assert counts.open_captures + sum(b.count for b in store.batches()) == len(survivors)
    assert budget * 0.8 < peak <= budget + batch.max_bytes + 8 * 1024
    for info in store.batches():
        verify_batch(store.batch_dir(info.batch_id))


def test_hourly_cap_is_a_token_bucket_of_the_store_clock(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock, per_hour=10)
    assert all(store.put(make_capture(i, clock.now)) for i in range(10))
    assert not store.put(make_capture(10, clock.now))
    clock.now += 359.0
    assert not store.put(make_capture(11, clock.now))
    clock.now += 1.5  # 360 s: one token back
    assert store.put(make_capture(12, clock.now))
    assert not store.put(make_capture(13, clock.now))
    store.set_limits(max_per_hour=0)
    clock.now += 7200
    assert not store.put(make_capture(14, clock.now))
    counts = store.counts()
    assert (counts.stored, counts.dropped_rate) == (11, 4)


def test_too_large_captures_are_refused_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock, budget=64 * 1024, max_capture=4096)
    assert not store.put(make_capture(0, clock.now, floats=2000))  # 8000 + 40 bytes
    store.set_limits(budget_bytes=1000)
    assert not store.put(make_capture(1, clock.now, floats=100))  # its file > the budget
    counts = store.counts()
    assert counts.too_large == 2 and counts.stored == 0 and disk_use(tmp_path) == 0


def test_a_smaller_budget_evicts_the_oldest_at_once(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    captures = [make_capture(i, clock.now + i) for i in range(40)]
    for capture in captures:
        assert store.put(capture)
    size = len(encode(captures[0]))
    store.set_limits(budget_bytes=10 * size + 100)
    assert disk_use(tmp_path) <= 10 * size + 100
    survivors = set(ids_on_disk(tmp_path))
    assert survivors == {c.capture_id for c in captures[-len(survivors):]}
    assert store.counts().dropped_budget == 40 - len(survivors)


def test_seal_due_on_count_bytes_and_age_and_manifest_order(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock, batch=BatchConfig(max_captures=5, max_bytes=1 << 20,
                                                          max_age_seconds=60))
    times = [50.0, 10.0, 30.0, 20.0, 40.0]
    for i, when in enumerate(times):
        store.put(make_capture(i, clock.now - when))
    [first] = store.seal_due()  # five open: the count is reached
    info, lines = read_batch(store.batch_dir(first))
    assert info.count == 5 and [line["time"] for line in lines] == sorted(
        clock.now - t for t in times)
    assert {"capture_id", "file", "sha256", "bytes", "rule", "frame_id"} <= set(lines[0])
    store.put(make_capture(9, clock.now))
    assert store.seal_due() == []
    clock.now += 61
    assert len(store.seal_due()) == 1  # the oldest open one is older than max_age
    assert store.seal() is None
    store.put(make_capture(10, clock.now))
    assert store.seal() is not None
    assert [b.count for b in store.batches()] == [5, 1, 1]
    assert store.counts().sealed_batches == 3 and store.counts().open_captures == 0


def test_put_seals_before_a_batch_would_overflow(tmp_path: Path) -> None:
    clock = Clock()
    size = len(encode(make_capture(0, clock.now)))
    store = open_store(tmp_path, clock, batch=BatchConfig(max_captures=100,
                                                          max_bytes=3 * size + 10))
    for i in range(10):
        store.put(make_capture(i, clock.now))
    assert [b.count for b in store.batches()] == [3, 3, 3]
    assert all(b.bytes <= 3 * size + 10 for b in store.batches())


def test_uploaded_batches_are_deleted_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    for i in range(12):
        store.put(make_capture(i, clock.now))
    store.seal()
    first, second = store.batches()
    assert store.verify_batch(first.batch_id) == first
    store.mark_uploaded(first.batch_id)
    assert not store.batch_dir(first.batch_id).exists()
    assert [b.batch_id for b in store.batches()] == [second.batch_id]
    with pytest.raises(KeyError):
        store.mark_uploaded(first.batch_id)
    with pytest.raises(KeyError):
        store.verify_batch("20250101T000000Z-000000000000")
    counts = store.counts()
    assert (counts.uploaded_batches, counts.uploaded_captures) == (1, 8)
    assert counts.bytes_on_disk == disk_use(tmp_path)


def test_open_removes_temp_files_and_quarantines_corrupt_ones(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    kept = [make_capture(i, clock.now) for i in range(3)]
    for capture in kept:
        store.put(capture)
    (tmp_path / "open" / ".000000000009-x.npz.tmp").write_bytes(b"half a capture")
    bad = tmp_path / "open" / f"000000000007-{'a' * 32}.npz"
    bad.write_bytes(encode(kept[0])[:300])  # torn: cannot come from the store itself
    (tmp_path / "batches" / ".20250101T000000Z-000000000000.trash").mkdir()
    reopened = open_store(tmp_path, clock)
    counts = reopened.counts()
    assert counts.open_captures == 3 and counts.quarantined == 1 and counts.stored == 0
    assert not any(p.name.endswith((".tmp", ".trash")) for p in tmp_path.rglob("*"))
    [entry] = (tmp_path / "quarantine").iterdir()
    assert "not a capture file" in (entry / "reason.txt").read_text()
    assert counts.bytes_on_disk == disk_use(tmp_path)
    late = make_capture(5, clock.now)
    assert reopened.put(late)  # numbering goes on after the files found
    assert sorted(ids_on_disk(tmp_path)) == sorted([c.capture_id for c in kept]
                                                   + [late.capture_id])
    assert sorted(p.name for p in (tmp_path / "open").iterdir())[-1].startswith(
        "000000000003-")


def test_a_seal_cut_short_is_completed_at_open(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    captures = [make_capture(i, clock.now + i) for i in range(6)]
    for capture in captures:
        store.put(capture)
    real = batches_module.atomic_write

    def fail_on_batch_file(path: Path, data: bytes) -> None:
        if path.name == BATCH_FILE:
            raise OSError(5, "Input/output error")
        real(path, data)

    monkeypatch.setattr(batches_module, "atomic_write", fail_on_batch_file)
    with pytest.raises(OSError, match="Input/output"):
        store.seal()
    monkeypatch.setattr(batches_module, "atomic_write", real)
    [batch] = store.batches()  # the store repaired itself after the failure
    assert (store.batch_dir(batch.batch_id) / BATCH_FILE).is_file()
    # a kill between the renames: half the captures in a batch without batch.json
    late = make_capture(7, clock.now + 7)
    store.put(late)
    directory = store.batch_dir(batch.batch_id)
    (directory / BATCH_FILE).unlink()
    (directory / MANIFEST_FILE).unlink()
    reopened = open_store(tmp_path, clock)
    [repaired] = reopened.batches()
    assert repaired.batch_id == batch.batch_id and repaired.count == 6
    assert verify_batch(directory) == repaired
    assert reopened.counts().open_captures == 1
    assert sorted(ids_on_disk(tmp_path)) == sorted([c.capture_id for c in captures]
                                                   + [late.capture_id])


def test_a_batch_whose_batch_json_is_edited_is_quarantined_at_open(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    for i in range(8):
        store.put(make_capture(i, clock.now))
    store.seal()
    [batch] = store.batches()
    (store.batch_dir(batch.batch_id) / BATCH_FILE).write_text("{not json")
    reopened = open_store(tmp_path, clock)
    assert reopened.batches() == [] and reopened.counts().quarantined == 1
    reason = (tmp_path / "quarantine" / batch.batch_id / "reason.txt").read_text()
    assert "not JSON" in reason


def test_counts_hold_with_a_writer_and_an_uploader_at_once(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock, budget=200 * 1024)
    done = threading.Event()

    def upload() -> None:
        while True:
            finished = done.is_set()  # the writer is done: seal the rest, send it, stop
            if finished:
                store.seal()
            for info in store.batches():
                store.verify_batch(info.batch_id)
                store.mark_uploaded(info.batch_id)
            if finished:
                return
            time.sleep(0.002)

    uploader = threading.Thread(target=upload)
    uploader.start()
    for i in range(150):
        assert store.put(make_capture(i, clock.now))
    done.set()
    uploader.join(30)
    counts = store.counts()
    assert counts.stored == 150 and counts.open_captures == 0
    assert counts.uploaded_captures + counts.dropped_budget == 150
    assert counts.bytes_on_disk == disk_use(tmp_path) == 0


def test_the_store_bench_measures_puts_and_seals_and_cleans_up(tmp_path: Path) -> None:
    from agent.tools.bench.capture_store import measure_store

    result = measure_store(tmp_path, seconds=0.3, capture_bytes=4096)
    assert result["captures"] >= BATCH_CAPTURES_FOR_BENCH or result["batches"] == 0
    assert result["captures_per_s"] > 0 and result["mb_per_s"] > 0
    assert result["file_bytes"] > 4096
    assert list(tmp_path.iterdir()) == []


BATCH_CAPTURES_FOR_BENCH = 64


def test_strays_in_the_store_are_moved_aside_never_crashing_the_open(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path, clock)
    store.put(make_capture(1, clock.now))
    (tmp_path / "batches" / "not-a-batch").mkdir()
    (tmp_path / "batches" / "README").write_text("hello")
    (tmp_path / "batches" / "20250101T000000Z-0123456789ab").mkdir()  # an empty, cut seal
    (tmp_path / "open" / "notes.txt").write_text("hi")
    (tmp_path / "quarantine" / "stray.bin").write_bytes(b"x" * 10)
    reopened = open_store(tmp_path, clock)
    counts = reopened.counts()
    assert counts.open_captures == 1 and counts.sealed_batches == 0
    assert counts.quarantined == 1 and counts.bytes_on_disk == disk_use(tmp_path)
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == []
    [moved] = (tmp_path / "quarantine").iterdir()
    reason = (moved / "reason.txt").read_text()
    assert "batches/not-a-batch: not a batch" in reason and "open/notes.txt" in reason
