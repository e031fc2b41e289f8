"""Results in shared memory, for consumers on the device that want the raw output tensors
with no socket and no JSON: the agent writes each published result into a ring of slots
in a POSIX shared-memory object (``/dev/shm/<results.shmRing>``), and any number of
readers map it and read the outputs in place (:class:`ResultRingReader`).

Layout (little-endian 64-bit words; every offset 64-byte aligned)::

    header (64 bytes):  magic (the word 0x4544474552455331, "EDGERES1"), written
                        (results written so far), slots, slot_bytes, outputs, owner
                        pid, closed, 1 spare word
    output table:       one 256-byte entry per output: name (128 bytes, UTF-8, NUL-padded),
                        dtype (16 bytes, numpy's str, e.g. "<f4"), offset and byte size
                        within a slot's data, ndim, shape (8 words)
    slot i:             seq, frame_id, frame_time_ns, variant (0 blue, 1 green),
                        top1 (best class index + 1; 0: none), top1 score (a float64),
                        flags (1: an API request's answer), 1 spare word;
                        then the model version (64 bytes, UTF-8, NUL-padded);
                        then the data: each output at its offset

Result ``k`` (the stream's ``seq``, from 1) goes in slot ``(k - 1) % slots``. The writer
sets the slot's ``seq`` to 0, writes the slot, sets ``seq = k`` and then ``written = k``;
it never waits for readers, so a slow reader loses the oldest results, never the agent
its pace. A reader takes ``written``, reads slot ``seq`` before and after using the data,
and keeps it only when both equal the result it wanted (:meth:`RingResult.valid`
re-checks a zero-copy read after use). ``closed`` is set when the agent stops.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from agent.core.errors import ResultRingError
from agent.core.model_layout import TensorSpec

MAGIC = 0x45444745_52455331  # "EDGERES1"
HEADER_BYTES = 64
ENTRY_BYTES = 256
SLOT_HEADER_BYTES = 128
MAX_OUTPUTS = 64
MAX_DIMS = 8
W_MAGIC, W_WRITTEN, W_SLOTS, W_SLOT_BYTES, W_OUTPUTS, W_OWNER, W_CLOSED = range(7)
S_SEQ, S_FRAME, S_TIME, S_VARIANT, S_TOP1, S_SCORE, S_FLAGS = range(7)
_ENTRY = struct.Struct(f"<128s16sQQQ{MAX_DIMS}Q")
VARIANTS = ("blue", "green")


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


@dataclass(frozen=True)
class RingOutput:
    """One output tensor as the ring carries it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _layout(specs: Sequence[TensorSpec]) -> tuple[RingOutput, ...]:
    if not 1 <= len(specs) <= MAX_OUTPUTS:
        raise ResultRingError(f"a result ring carries 1 to {MAX_OUTPUTS} outputs, "
                              f"not {len(specs)}")
    placed, offset = [], 0
    for spec in specs:
        dtype, shape = np.dtype(spec.dtype), tuple(int(d) for d in spec.shape)
        if len(shape) > MAX_DIMS:
            raise ResultRingError(f"output {spec.name!r} has over {MAX_DIMS} dimensions")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        placed.append(RingOutput(spec.name, dtype, shape, offset, nbytes))
        offset = _align(offset + nbytes)
    return tuple(placed)


def _table_end(count: int) -> int:
    return _align(HEADER_BYTES + count * ENTRY_BYTES)


def _untrack(shm: shared_memory.SharedMemory) -> None:
    """Python < 3.13 would unlink a segment this process only opened when it exits."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except (ImportError, AttributeError, KeyError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


class _Mapped:
    """The mapped ring, read from its header (either end)."""

    def __init__(self, shm: shared_memory.SharedMemory) -> None:
        self.shm = shm
        self.name: str = shm.name.lstrip("/")
        buf = shm.buf
        if buf is None or len(buf) < HEADER_BYTES:
            raise ResultRingError(f"shared memory {self.name!r} is not a result ring")
        head = buf[:HEADER_BYTES].cast("Q")
        magic, slots, count, stride = (head[W_MAGIC], head[W_SLOTS], head[W_OUTPUTS],
                                       head[W_SLOT_BYTES])
        head.release()
        if magic != MAGIC or slots < 1 or not 1 <= count <= MAX_OUTPUTS:
            raise ResultRingError(f"shared memory {self.name!r} is not a result ring")
        self.outputs = tuple(self._entry(buf, i) for i in range(count))
        self.slots, self.stride = int(slots), int(stride)
        self.base = _table_end(count)
        if len(buf) < self.base + self.slots * self.stride:
            raise ResultRingError(f"shared memory {self.name!r} is smaller than its header says")
        self.words = buf.cast("Q")
        self.buf = buf

    @staticmethod
    def _entry(buf: memoryview, index: int) -> RingOutput:
        name, dtype, offset, nbytes, ndim, *dims = _ENTRY.unpack_from(
            buf, HEADER_BYTES + index * ENTRY_BYTES)
        return RingOutput(name.rstrip(b"\0").decode("utf-8", "replace"),
                          np.dtype(dtype.rstrip(b"\0").decode("ascii")), tuple(dims[:ndim]),
                          offset, nbytes)

    def slot_start(self, index: int) -> int:
        return self.base + index * self.stride

    def views(self, index: int) -> tuple[np.ndarray, ...]:
        data = self.slot_start(index) + SLOT_HEADER_BYTES
        return tuple(np.ndarray(o.shape, o.dtype, buffer=self.buf, offset=data + o.offset)
                     for o in self.outputs)

    def release(self) -> None:
        self.words.release()
        self.shm.close()


class ResultRingWriter:
    """The agent's end: creates the ring under ``name`` for outputs ``specs``."""

    def __init__(self, name: str, specs: Sequence[TensorSpec], slots: int = 64) -> None:
        if slots < 1:
            raise ResultRingError("a result ring needs at least one slot")
        placed = _layout(specs)
        stride = SLOT_HEADER_BYTES + _align(placed[-1].offset + placed[-1].nbytes)
        size = _table_end(len(placed)) + slots * stride
        shm = _create(name, size)
        buf = shm.buf
        assert buf is not None
        words = buf.cast("Q")
        for i in range(HEADER_BYTES // 8):
            words[i] = 0
        for i, out in enumerate(placed):
            _ENTRY.pack_into(buf, HEADER_BYTES + i * ENTRY_BYTES, out.name.encode()[:128],
                             out.dtype.str.encode(), out.offset, out.nbytes, len(out.shape),
                             *out.shape, *([0] * (MAX_DIMS - len(out.shape))))
        words[W_SLOTS], words[W_SLOT_BYTES], words[W_OUTPUTS] = slots, stride, len(placed)
        words[W_OWNER] = os.getpid()
        words[W_MAGIC] = MAGIC
        words.release()
        self.ring = _Mapped(shm)
        self._views = [self.ring.views(i) for i in range(slots)]
        self._scores = [np.ndarray((1,), np.float64, buffer=buf,
                                   offset=self.ring.slot_start(i) + S_SCORE * 8)
                        for i in range(slots)]
        self.name = self.ring.name

    def write(self, seq: int, outputs: Sequence[np.ndarray], *, frame_id: int,
              frame_time: float, variant: str, version: str, top1: int | None,
              score: float | None, request: bool = False) -> None:
        """Write result ``seq`` (from 1, one more than the last) with its outputs."""
        ring = self.ring
        index = (seq - 1) % ring.slots
        words, start = ring.words, ring.slot_start(index)
        w = start // 8
        words[w + S_SEQ] = 0
        words[w + S_FRAME] = max(int(frame_id), 0)
        words[w + S_TIME] = max(int(frame_time * 1e9), 0)
        words[w + S_VARIANT] = VARIANTS.index(variant) if variant in VARIANTS else 0
        words[w + S_TOP1] = 0 if top1 is None else top1 + 1
        words[w + S_FLAGS] = int(request)
        self._scores[index][0] = 0.0 if score is None else score
        ring.buf[start + 64:start + SLOT_HEADER_BYTES] = version.encode()[:64].ljust(64, b"\0")
        for dest, src in zip(self._views[index], outputs, strict=True):
            np.copyto(dest, src, casting="no")
        words[w + S_SEQ] = seq
        words[W_WRITTEN] = seq

    def close(self) -> None:
        """Mark the ring closed and remove its name (readers keep their mapping)."""
        self.ring.words[W_CLOSED] = 1
        self._views.clear()
        self._scores.clear()
        self.ring.release()
        with contextlib.suppress(FileNotFoundError):
            self.ring.shm.unlink()


def _create(name: str, size: int) -> shared_memory.SharedMemory:
    try:
        return shared_memory.SharedMemory(name=name, create=True, size=size)
    except FileExistsError:
        pass
    except OSError as err:
        raise ResultRingError(f"cannot create the result ring {name!r}: {err}") from err
    # A ring of that name exists: replace it if the agent that made it is gone.
    try:
        found = _open(name)
        _untrack(found)
        old = _Mapped(found)
    except ResultRingError as err:
        raise ResultRingError(f"shared memory {name!r} exists and is not a result ring: "
                              "choose another results.shmRing") from err
    owner = int(old.words[W_OWNER])
    old.release()
    if _alive(owner) and owner != os.getpid():
        raise ResultRingError(f"result ring {name!r} is in use by a running agent "
                              f"(pid {owner}): choose another results.shmRing")
    with contextlib.suppress(FileNotFoundError):
        shared_memory.SharedMemory(name=name).unlink()
    return shared_memory.SharedMemory(name=name, create=True, size=size)


def _open(name: str) -> shared_memory.SharedMemory:
    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError as err:
        raise ResultRingError(f"no result ring {name!r} (is the agent running with "
                              "results.shmRing set to it?)") from err
    except (OSError, ValueError) as err:
        raise ResultRingError(f"shared memory {name!r} cannot be opened: {err}") from err
    return shm


@dataclass(frozen=True)
class RingResult:
    """One result read from the ring. ``outputs`` are copies, or views on the ring for a
    zero-copy read: then check :meth:`valid` after using them."""

    seq: int
    frame_id: int
    frame_time: float
    variant: str
    version: str
    top1: int | None
    score: float | None
    request: bool
    outputs: dict[str, np.ndarray]
    _reader: ResultRingReader

    def valid(self) -> bool:
        """Whether the slot still holds this result (a zero-copy read is sound if so)."""
        return self._reader.seq_of(self.seq) == self.seq


class ResultRingReader:
    """A consumer's end: :meth:`latest`, :meth:`read` a result by ``seq``, or :meth:`next`
    after one. Any number of readers may read at once; none slows the agent down."""

    def __init__(self, name: str) -> None:
        self.ring = _Mapped(_open(name))
        if int(self.ring.words[W_OWNER]) != os.getpid():
            _untrack(self.ring.shm)  # the agent's segment: never this process's to unlink
        self.outputs = self.ring.outputs
        self.name = self.ring.name

    @property
    def written(self) -> int:
        """Results written so far; the newest is ``written``."""
        return int(self.ring.words[W_WRITTEN])

    @property
    def closed(self) -> bool:
        return bool(self.ring.words[W_CLOSED])

    def seq_of(self, seq: int) -> int:
        """The seq that the slot of result ``seq`` holds now (0 while being written)."""
        ring = self.ring
        return int(ring.words[ring.slot_start((seq - 1) % ring.slots) // 8 + S_SEQ])

    def latest(self, *, copy: bool = True) -> RingResult | None:
        written = self.written
        return self.read(written, copy=copy) if written else None

    def read(self, seq: int, *, copy: bool = True) -> RingResult | None:
        """Result ``seq``, or None when it is not written yet or was overwritten."""
        if seq < 1 or seq > self.written or self.seq_of(seq) != seq:
            return None
        ring = self.ring
        index = (seq - 1) % ring.slots
        start = ring.slot_start(index)
        w = start // 8
        words = ring.words
        frame, time_ns, variant, top1, flags = (words[w + S_FRAME], words[w + S_TIME],
                                                words[w + S_VARIANT], words[w + S_TOP1],
                                                words[w + S_FLAGS])
        score = float(np.frombuffer(ring.buf, np.float64, 1, start + S_SCORE * 8)[0])
        version = bytes(ring.buf[start + 64:start + SLOT_HEADER_BYTES]).rstrip(b"\0")
        views = ring.views(index)
        outputs = {o.name: (v.copy() if copy else v)
                   for o, v in zip(ring.outputs, views, strict=True)}
        if self.seq_of(seq) != seq:
            return None  # overwritten while being read
        return RingResult(seq=seq, frame_id=int(frame), frame_time=time_ns / 1e9,
                          variant=VARIANTS[variant] if variant < len(VARIANTS) else "blue",
                          version=version.decode("utf-8", "replace"),
                          top1=int(top1) - 1 if top1 else None,
                          score=score if top1 else None, request=bool(flags & 1),
                          outputs=outputs, _reader=self)

    def next(self, after: int, timeout_s: float = 1.0, *,
             poll_s: float = 0.001) -> RingResult | None:
        """The oldest result after ``after`` still in the ring, waiting up to ``timeout_s``
        for one; None on timeout (or once the agent closed the ring)."""
        deadline = time.monotonic() + timeout_s
        while True:
            written = self.written
            if written > after:
                oldest = max(after + 1, written - self.ring.slots + 1)
                for seq in range(oldest, written + 1):
                    found = self.read(seq)
                    if found is not None:
                        return found
            if self.closed or time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)

    def close(self) -> None:
        self.ring.release()
