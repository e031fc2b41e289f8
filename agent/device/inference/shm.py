"""A shared-memory ring that a separate producer process fills (camera, sensor, decoder).

Layout of the segment (little-endian u64 words)::

    header: magic, write_seq, read_seq, slots, sample_bytes, closed, 0, 0
    slot i: seq, label, sample bytes (padded to 64-byte lines)

The producer writes slot ``k % slots``, stores the slot's ``seq = k + 1`` last
and then advances ``write_seq``; it never laps the consumer (it waits while
``write_seq - read_seq == slots``). The consumer copies the slot into the
loop's bound input buffer and re-reads the slot's ``seq`` to detect a torn
read, then advances ``read_seq``. Views on every slot are made once, so a
fill is one buffer copy.
"""

from __future__ import annotations

import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from agent.core.errors import InputSpecError

MAGIC = 0x45444745_53484D31  # "EDGESHM1"
HEADER_WORDS = 8
SLOT_HEADER = 16
_W_MAGIC, _W_WRITE, _W_READ, _W_SLOTS, _W_BYTES, _W_CLOSED = range(6)


def _buf(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:
        raise InputSpecError(f"shared memory {shm.name!r} is closed")
    return buf


def _slot_stride(sample_bytes: int) -> int:
    return (SLOT_HEADER + sample_bytes + 63) // 64 * 64


class ShmRing:
    """Either end of the ring; ``create`` for the consumer, ``attach`` for a producer."""

    def __init__(self, shm: shared_memory.SharedMemory, *, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.words = _buf(shm).cast("Q")
        if self.words[_W_MAGIC] != MAGIC:
            raise InputSpecError(f"shared memory {shm.name!r} is not an edge-agent ring")
        self.slots = self.words[_W_SLOTS]
        self.sample_bytes = self.words[_W_BYTES]
        self.stride = _slot_stride(self.sample_bytes)

    @classmethod
    def create(cls, *, sample_bytes: int, slots: int = 8) -> ShmRing:
        size = HEADER_WORDS * 8 + slots * _slot_stride(sample_bytes)
        shm = shared_memory.SharedMemory(create=True, size=size)
        words = _buf(shm).cast("Q")
        for i in range(HEADER_WORDS):
            words[i] = 0
        words[_W_SLOTS], words[_W_BYTES] = slots, sample_bytes
        words[_W_MAGIC] = MAGIC
        words.release()
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> ShmRing:
        shm = shared_memory.SharedMemory(name=name)
        try:  # Python < 3.13 would unlink the consumer's segment when this process exits
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except (ImportError, AttributeError, KeyError):
            pass
        return cls(shm, owner=False)

    def slot_offset(self, index: int) -> int:
        return HEADER_WORDS * 8 + index * self.stride

    def slot_view(self, index: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        offset = self.slot_offset(index) + SLOT_HEADER
        view: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=_buf(self.shm), offset=offset)
        return view

    def set_slot_word(self, index: int, word: int, value: int) -> None:
        self.words[(self.slot_offset(index) // 8) + word] = value

    def publish(self, sample: np.ndarray, label: int, *, timeout_s: float = 5.0) -> bool:
        """Producer side: write one sample; False if the consumer stopped reading."""
        deadline = time.monotonic() + timeout_s
        seq = self.words[_W_WRITE]
        while seq - self.words[_W_READ] >= self.slots:
            if self.words[_W_CLOSED] or time.monotonic() > deadline:
                return False
            time.sleep(0.0002)
        index = seq % self.slots
        self.set_slot_word(index, 0, 0)
        self.set_slot_word(index, 1, label & 0xFFFFFFFFFFFFFFFF)
        view = self.slot_view(index, sample.dtype, sample.shape)
        view[...] = sample
        self.set_slot_word(index, 0, seq + 1)
        self.words[_W_WRITE] = seq + 1
        return True

    def close(self) -> None:
        if self.owner:
            self.words[_W_CLOSED] = 1
        self.words.release()
        self.shm.close()
        if self.owner:
            self.shm.unlink()


class ShmSource:
    """Loop source that copies each published sample into the bound input buffer."""

    name = "shm"

    def __init__(self, *, buffer: np.ndarray, ring: ShmRing,
                 producer: subprocess.Popen[bytes] | None = None,
                 wait_timeout_s: float = 10.0) -> None:
        if ring.sample_bytes != buffer.nbytes:
            raise InputSpecError(f"ring carries {ring.sample_bytes}-byte samples, the model "
                                 f"input is {buffer.nbytes} bytes")
        self._buffer = buffer
        self._ring = ring
        self._producer = producer
        self._views = [ring.slot_view(i, buffer.dtype, buffer.shape) for i in range(ring.slots)]
        self._words = ring.words
        self._slot_words = [ring.slot_offset(i) // 8 for i in range(ring.slots)]
        self._wait_timeout_s = wait_timeout_s
        self.torn_reads = 0

    @classmethod
    def spawn(cls, *, buffer: np.ndarray, testset: Path | None, rate_hz: float = 0.0,
              slots: int = 8) -> ShmSource:
        """Create a ring and start ``agent.device.inference.shm_producer`` feeding it."""
        ring = ShmRing.create(sample_bytes=buffer.nbytes, slots=slots)
        cmd = [sys.executable, "-m", "agent.device.inference.shm_producer", "--shm", ring.shm.name,
               "--dtype", str(buffer.dtype), "--shape", ",".join(map(str, buffer.shape)),
               "--rate", str(rate_hz)]
        if testset is not None:
            cmd += ["--testset", str(testset)]
        producer = subprocess.Popen(cmd)
        return cls(buffer=buffer, ring=ring, producer=producer)

    def fill(self) -> int:
        words = self._words
        seq = words[_W_READ]
        if words[_W_WRITE] <= seq:
            self._wait(seq)
        index = seq % len(self._views)
        base = self._slot_words[index]
        while True:
            self._buffer[...] = self._views[index]
            label = words[base + 1]
            if words[base] == seq + 1:
                break
            self.torn_reads += 1  # the producer rewrote the slot while we copied it
        words[_W_READ] = seq + 1
        return label if label < (1 << 63) else label - (1 << 64)

    def _wait(self, seq: int) -> None:
        deadline = time.monotonic() + self._wait_timeout_s
        while self._words[_W_WRITE] <= seq:
            if self._producer is not None and self._producer.poll() is not None:
                raise InputSpecError(
                    f"shared-memory producer exited with status {self._producer.returncode}"
                )
            if time.monotonic() > deadline:
                raise InputSpecError("no sample from the shared-memory producer in "
                                     f"{self._wait_timeout_s:.0f} s")
            time.sleep(0.00005)

    def close(self) -> None:
        self._views = []
        if self._producer is not None and self._producer.poll() is None:
            self._producer.terminate()
            try:
                self._producer.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._producer.kill()
                self._producer.wait()
        self._ring.close()
