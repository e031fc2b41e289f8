"""The ``shm`` source against a producer that writes garbage into the ring: every frame is
checked before it runs, a bad one is a counted RingFrameError (logged once per interval),
the ring is put back as the agent keeps it, and the next good frame is served."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import RingError, RingFrameError
from agent.device.inference.shm import ShmSource
from agent.producer import FrameProducer
from agent.wire.shm_ring import (
    ENTRY_BYTES,
    HEADER_BYTES,
    MAGIC,
    S_SEQ,
    W_BYTES,
    W_CLOSED,
    W_MAGIC,
    W_READ,
    W_SLOTS,
    W_WRITE,
    Segment,
    ShmRing,
)

SHAPE = (1, 4)
SLOTS = 4
U64 = (1 << 64) - 1
# Word indices within an input-table entry: name (16 words), dtype (2), offset, nbytes,
# ndim, then the dimensions.
E_OFFSET, E_NBYTES, E_NDIM, E_DIM0 = 18, 19, 20, 21


@pytest.fixture()
def source() -> Iterator[ShmSource]:
    ring = ShmRing.create([("x", np.float32, SHAPE)], name=f"edge-agent-unit-{os.getpid()}-"
                          f"{uuid.uuid4().hex[:8]}", slots=SLOTS)
    made = ShmSource(buffers=(np.zeros(SHAPE, np.float32),), ring=ring,
                     reject_log_interval_s=3600)
    yield made
    made.close()


def _good(source: ShmSource, value: float, label: int) -> None:
    with FrameProducer.attach(source.ring.name) as producer:
        producer.write(np.full(SHAPE, value, np.float32), label=label)


def _served(source: ShmSource) -> tuple[float, int]:
    assert source.ready(), source.last_rejection
    label = source.fill()
    buffer = source._slots[0][1][0][0]
    return float(buffer[0, 0]), label


def _table_word(index: int) -> int:
    return (HEADER_BYTES + 0 * ENTRY_BYTES) // 8 + index


def _slot_seq(source: ShmSource, seq: int) -> None:
    """Publish a frame whose slot header claims sequence number ``seq``."""
    words, pos = source.ring.words, source.ring.words[W_WRITE]
    words[source.ring.slot_word(pos % SLOTS) + S_SEQ] = seq
    words[W_WRITE] = pos + 1


ATTACKS = {
    "bad magic": (lambda s: s.ring.words.__setitem__(W_MAGIC, 0xBAD), r"magic set to 2989"),
    "slot length past the slot": (lambda s: s.ring.words.__setitem__(W_BYTES, 1 << 40),
                                  r"sample bytes set to 1099511627776 \(is 64\)"),
    "slot count": (lambda s: s.ring.words.__setitem__(W_SLOTS, 1000), r"slots set to 1000"),
    "another tensor shape": (
        lambda s: s.ring.words.__setitem__(_table_word(E_DIM0 + 1), 4096),
        r"input table rewritten"),
    "input larger than its sample": (
        lambda s: s.ring.words.__setitem__(_table_word(E_NBYTES), 1 << 30),
        r"input table rewritten"),
    "huge frame id": (lambda s: _slot_seq(s, U64), rf"holds frame {U64}, not frame 2"),
    "frame id zero (unwritten slot)": (lambda s: _slot_seq(s, 0), r"holds frame 0, not frame 2"),
    "frame id from the past": (lambda s: _slot_seq(s, 1), r"holds frame 1, not frame 2"),
    "write position backwards": (lambda s: s.ring.words.__setitem__(W_WRITE, 0),
                                 r"write position 0 is behind the read position 1"),
    "write position far ahead": (lambda s: s.ring.words.__setitem__(W_WRITE, U64),
                                 rf"write position {U64} is more than 4 slots ahead"),
    "read position rewritten": (lambda s: s.ring.words.__setitem__(W_READ, 1 << 62),
                                r"read position set to 4611686018427387904 \(is 1\)"),
    "ring marked closed": (lambda s: s.ring.words.__setitem__(W_CLOSED, 1), r"marked closed"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_hostile_write_is_refused_counted_and_repaired(
        source: ShmSource, attack: str, caplog: pytest.LogCaptureFixture) -> None:
    _good(source, 1.0, label=1)
    assert _served(source) == (1.0, 1) and source.frame_id == 1
    header = source.ring.shm.buf[:source.ring.base].tobytes()
    act, message = ATTACKS[attack]
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources"):
        act(source)
        assert not source.ready()  # refused: nothing to run
        assert not source.ready()  # and only once: the ring is as the agent keeps it again
    assert source.rejected == 1
    assert isinstance(source.last_rejection, RingFrameError)
    assert isinstance(source.last_rejection, RingError)
    assert str(source.last_rejection).endswith(": frame not run")
    assert re.search(message, str(source.last_rejection)), source.last_rejection
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "frame(s) refused" in lines[0], lines
    words = source.ring.words
    fixed = source.ring.shm.buf[:source.ring.base].tobytes()
    same = [i for i in range(0, len(header), 8) if i // 8 not in (W_WRITE, W_READ)]
    assert all(fixed[i:i + 8] == header[i:i + 8] for i in same), "the header is put back"
    assert words[W_MAGIC] == MAGIC and words[W_CLOSED] == 0
    assert words[W_READ] == words[W_WRITE] == source.frame_id + (
        1 if attack.startswith("frame id") or attack == "huge frame id" else 0)
    _good(source, 2.0, label=2)  # a producer attaching again is served at once
    assert _served(source) == (2.0, 2)


def test_refusals_are_logged_once_per_interval_with_their_count(
        caplog: pytest.LogCaptureFixture) -> None:
    ring = ShmRing.create([("x", np.float32, SHAPE)], slots=SLOTS)
    source = ShmSource(buffers=(np.zeros(SHAPE, np.float32),), ring=ring,
                       reject_log_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources"):
        for _ in range(1000):
            ring.words[W_MAGIC] = 0
            assert not source.ready()
        source.close()
    lines = [r.getMessage() for r in caplog.records]
    assert source.rejected == 1000
    assert len(lines) == 2, lines  # the first refusal, and the total when the source closes
    assert "1 frame(s) refused since the last such line, 1 in all" in lines[0]
    assert lines[1].startswith("source shm: 1000 frame(s) refused in all; the last: ")


class _Buffer:
    """Plain bytes posing as a mapped segment, for ShmRing's header checks."""

    def __init__(self, data: bytes) -> None:
        self.name = "fuzzed"
        self.buf = memoryview(bytearray(data))


@pytest.mark.parametrize(("edit", "message"), [
    ((E_NDIM, 9), r"input 0 has 9 dimensions"),
    ((E_DIM0, 0), r"at most 8 positive dimensions"),
    ((E_NBYTES, 3), r"input table does not match"),
    ((E_OFFSET, 64), r"input table does not match"),
])
def test_attaching_to_a_ring_with_a_lying_input_table_is_a_ring_error(
        source: ShmSource, edit: tuple[int, int], message: str) -> None:
    data = bytearray(source.ring.shm.buf)
    words = memoryview(data).cast("Q")
    words[_table_word(edit[0])] = edit[1]
    words.release()
    with pytest.raises(RingError, match=message):
        ShmRing(_Buffer(bytes(data)), owner=False)  # type: ignore[arg-type]


def test_a_dtype_that_is_not_one_is_a_ring_error(source: ShmSource) -> None:
    data = bytearray(source.ring.shm.buf)
    data[HEADER_BYTES + 128:HEADER_BYTES + 144] = b"\xff(nonsense)\0\0\0\0\0"
    with pytest.raises(RingError, match=r"input 0 has no valid dtype"):
        ShmRing(_Buffer(bytes(data)), owner=False)  # type: ignore[arg-type]


_WORD_VALUES = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 63, 64, MAGIC, U64, U64 - 1,
                                          1 << 63, (1 << 63) - 1]),
                         st.integers(min_value=0, max_value=U64))
_WRITES = st.lists(st.tuples(st.integers(min_value=0, max_value=127), _WORD_VALUES),
                   min_size=1, max_size=12)


def _garbage_then_good(source: ShmSource, writes: list[tuple[int, int]]) -> None:
    ring = source.ring
    slot_words = [ring.slot_word(i) + k for i in range(SLOTS) for k in range(8)]
    targets = list(range(ring.base // 8)) + slot_words  # header, table, slot headers
    served_before = source.frame_id
    for where, value in writes:
        ring.words[targets[where % len(targets)]] = value
    for _ in range(SLOTS + 2):  # garbage that happens to be a well-formed frame may run
        if source.ready():
            source.fill()
    assert source.frame_id >= served_before
    _good(source, 9.0, label=9)
    for _ in range(SLOTS + 2):
        if source.ready() and source.fill() == 9:
            return
    raise AssertionError(f"the good frame was not served; last: {source.last_rejection}")


@BRIEF
@given(writes=_WRITES)
def test_fuzz_garbage_in_the_ring_never_breaks_the_consumer(
        source: ShmSource, writes: list[tuple[int, int]]) -> None:
    _garbage_then_good(source, writes)


@pytest.mark.slow
@LONG
@given(writes=_WRITES)
def test_fuzz_garbage_in_the_ring_never_breaks_the_consumer_long(
        source: ShmSource, writes: list[tuple[int, int]]) -> None:
    _garbage_then_good(source, writes)


@BRIEF
@given(data=st.binary(min_size=0, max_size=1024), count=st.integers(0, 70),
       slots=st.sampled_from([0, 1, 2, 1 << 62, U64]))
def test_fuzz_reading_a_ring_header_is_a_ring_or_a_ring_error(
        data: bytes, count: int, slots: int) -> None:
    raw = bytearray(data.ljust(HEADER_BYTES + ENTRY_BYTES * 2, b"\0"))
    words = memoryview(raw).cast("Q")
    words[W_MAGIC], words[6], words[W_SLOTS] = MAGIC, count, slots
    words.release()
    try:
        ring = ShmRing(_Buffer(bytes(raw)), owner=False)  # type: ignore[arg-type]
    except RingError:
        return
    assert 1 <= len(ring.inputs) <= 64 and ring.slots >= 1


def test_segment_is_what_the_fuzz_stands_in_for() -> None:
    segment = Segment.create(None, 4096)
    try:
        assert {"name", "buf"} <= set(vars(segment))
    finally:
        segment.close()
        segment.unlink()
