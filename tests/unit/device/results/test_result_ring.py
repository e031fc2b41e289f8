"""The shared-memory result ring: its layout as a reader sees it, overwrite detection, and
names that are taken or are no result ring."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from agent.core.errors import ResultRingError
from agent.core.model_layout import TensorSpec
from agent.device.results.shm_ring import (
    HEADER_BYTES,
    MAGIC,
    W_OWNER,
    ResultRingReader,
    ResultRingWriter,
)

SPECS = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),
         TensorSpec(name="boxes", dtype="int64", shape=(2, 4)))


@pytest.fixture
def name() -> str:
    return f"edge-results-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def writer(name: str) -> Iterator[ResultRingWriter]:
    ring = ResultRingWriter(name, SPECS, slots=4)
    yield ring
    ring.close()


def write(ring: ResultRingWriter, seq: int, *, variant: str = "blue") -> tuple[np.ndarray, ...]:
    outputs = (np.array([[0.1, 0.7, seq]], np.float32),
               np.arange(8, dtype=np.int64).reshape(2, 4) + seq)
    ring.write(seq, outputs, frame_id=100 + seq, frame_time=1700000000.25 + seq,
               variant=variant, version=f"model-v{seq}", top1=1, score=0.7,
               request=seq % 2 == 0)
    return outputs


def test_a_reader_sees_each_field_and_the_outputs(writer: ResultRingWriter, name: str) -> None:
    reader = ResultRingReader(name)
    try:
        assert reader.latest() is None and reader.written == 0
        assert int(reader.ring.words[0]) == MAGIC == int.from_bytes(b"EDGERES1", "big")
        assert [(o.name, o.dtype.str, o.shape) for o in reader.outputs] == \
            [("probs", "<f4", (1, 3)), ("boxes", "<i8", (2, 4))]
        sent = write(writer, 1)
        write(writer, 2, variant="green")
        got = reader.read(1)
        assert got is not None
        assert (got.seq, got.frame_id, got.variant, got.version, got.top1, got.request) == \
            (1, 101, "blue", "model-v1", 1, False)
        assert got.frame_time == pytest.approx(1700000001.25)
        assert got.score == pytest.approx(0.7)
        assert np.array_equal(got.outputs["probs"], sent[0])
        assert np.array_equal(got.outputs["boxes"], sent[1])
        latest = reader.latest()
        assert latest is not None and latest.seq == 2 and latest.variant == "green"
        assert latest.request
    finally:
        reader.close()


def test_a_slow_reader_loses_the_oldest_and_can_tell(writer: ResultRingWriter,
                                                    name: str) -> None:
    reader = ResultRingReader(name)
    try:
        for seq in range(1, 4):
            write(writer, seq)
        view = reader.read(1, copy=False)
        assert view is not None and view.valid()
        assert view.outputs["probs"][0, 2] == 1.0  # in place, on the ring
        for seq in range(4, 8):  # four slots: result 5 takes result 1's slot
            write(writer, seq)
        assert not view.valid()  # the zero-copy read knows it was overwritten
        assert view.outputs["probs"][0, 2] == 5.0
        assert reader.read(1) is None and reader.read(3) is None and reader.read(9) is None
        nxt = reader.next(after=2, timeout_s=0.1)  # 3 is gone: the oldest left is 4
        assert nxt is not None and nxt.seq == 4
        assert reader.next(after=7, timeout_s=0.05) is None
    finally:
        del view
        reader.close()


def test_a_closed_ring_ends_a_waiting_reader(name: str) -> None:
    ring = ResultRingWriter(name, SPECS, slots=2)
    reader = ResultRingReader(name)
    ring.close()
    try:
        assert reader.closed and reader.next(after=0, timeout_s=5.0) is None
        with pytest.raises(ResultRingError, match="no result ring"):
            ResultRingReader(name)
    finally:
        reader.close()


def test_a_ring_left_by_a_dead_agent_is_replaced(name: str) -> None:
    stale = ResultRingWriter(name, SPECS, slots=2)
    stale.ring.words[W_OWNER] = 2**22 + 12345  # no such process
    stale._views.clear()
    stale._scores.clear()
    stale.ring.release()  # left behind: not unlinked
    fresh = ResultRingWriter(name, SPECS, slots=3)
    try:
        assert fresh.ring.slots == 3 and int(fresh.ring.words[W_OWNER]) == os.getpid()
    finally:
        fresh.close()


def test_names_held_by_a_live_agent_or_by_something_else_are_refused(name: str) -> None:
    live = ResultRingWriter(name, SPECS, slots=2)
    live.ring.words[W_OWNER] = os.getppid()  # another running process
    try:
        with pytest.raises(ResultRingError, match="in use by a running agent"):
            ResultRingWriter(name, SPECS)
    finally:
        live.ring.words[W_OWNER] = os.getpid()
        live.close()
    other = shared_memory.SharedMemory(name=name, create=True, size=HEADER_BYTES)
    try:
        with pytest.raises(ResultRingError, match="not a result ring"):
            ResultRingWriter(name, SPECS)
        with pytest.raises(ResultRingError, match="not a result ring"):
            ResultRingReader(name)
    finally:
        other.close()
        other.unlink()


def test_outputs_of_another_shape_are_refused(writer: ResultRingWriter) -> None:
    with pytest.raises((ValueError, TypeError)):
        writer.write(1, (np.zeros((1, 4), np.float32), np.zeros((2, 4), np.int64)),
                     frame_id=1, frame_time=0.0, variant="blue", version="v", top1=None,
                     score=None)
    with pytest.raises(ResultRingError, match="1 to 64 outputs"):
        ResultRingWriter("edge-results-none", ())
