"""The shared-memory frame ring between a producer process (a camera, a decoder, a sensor)
and the agent's inference loop: its layout, and both ends of its protocol.

The agent creates the ring (:meth:`ShmRing.create`) for its model's inputs; a producer
attaches to it by name (:meth:`ShmRing.attach`, or :class:`agent.producer.FrameProducer`)
and writes each frame in place into the next free slot. One sample holds every input of
the model, so multi-input models work the same as single-input ones. Layout of the POSIX
shared-memory object (little-endian 64-bit words)::

    header (64 bytes):  magic "EDGESHM2", write_seq, read_seq, slots, sample_bytes,
                        closed, inputs, owner pid
    input table:        one 256-byte entry per input: name (128 bytes, UTF-8, NUL-padded),
                        dtype (16 bytes, numpy's str, e.g. "<f4"), offset and byte size
                        within a sample, ndim, shape (8 words)
    slot i (64-byte aligned): seq, label, time_ns, 5 spare words, then the sample: each
                        input at its offset, each offset 64-byte aligned

The producer fills slot ``k % slots`` (its ``seq`` word 0 meanwhile), stores ``seq = k + 1``
and then advances ``write_seq``; it never laps the consumer (it waits while ``write_seq -
read_seq == slots``). The consumer copies the slot into the loop's bound input buffers,
re-reads the slot's ``seq`` to detect a torn read, then advances ``read_seq``. ``closed``
is set by the agent when it stops, so a producer knows to attach again; ``owner`` is the
agent's process id, so a ring left behind by an agent that died can be told from one in use.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # multiprocessing.shared_memory's own
import contextlib
import math
import mmap
import os
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.errors import (
    InputSpecError,
    RegionError,
    RingClosedError,
    RingError,
    RingFullError,
)

MAGIC = 0x45444745_53484D32  # "EDGESHM2"
HEADER_BYTES = 64
ENTRY_BYTES = 256
SLOT_HEADER_BYTES = 64
MAX_INPUTS = 64
MAX_DIMS = 8
W_MAGIC, W_WRITE, W_READ, W_SLOTS, W_BYTES, W_CLOSED, W_INPUTS, W_OWNER = range(8)
S_SEQ, S_LABEL, S_TIME = range(3)  # words of a slot's header
SHM_ROOT = Path("/dev/shm")


def shm_path(key: str) -> Path:
    """Where ``shm_open(key)`` (``/name`` or ``name``) keeps its object on Linux."""
    name = key.lstrip("/")
    if not name or "/" in name or name in (".", ".."):
        raise RegionError(f"shared memory key {key!r} is not a valid shm_open name")
    return SHM_ROOT / name

_ENTRY = struct.Struct(f"<128s16sQQQ{MAX_DIMS}Q")
_POLL_S = 0.0002


@dataclass(frozen=True)
class RingInput:
    """One model input as the ring carries it: where it sits in each sample."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


def layout(inputs: Sequence[tuple[str, np.dtype | str, Sequence[int]]]) -> tuple[RingInput, ...]:
    """The placement of ``inputs`` (name, dtype, shape) in one sample."""
    if not 1 <= len(inputs) <= MAX_INPUTS:
        raise InputSpecError(f"a ring carries 1 to {MAX_INPUTS} inputs, not {len(inputs)}")
    placed, offset = [], 0
    for name, dtype, shape in inputs:
        dt, dims = np.dtype(dtype), tuple(int(d) for d in shape)
        if len(dims) > MAX_DIMS or any(d < 1 for d in dims) or dt.hasobject:
            raise InputSpecError(f"input {name!r} {dt}{list(dims)} cannot go in a ring "
                                 f"(at most {MAX_DIMS} positive dimensions, plain numbers)")
        nbytes = math.prod(dims) * dt.itemsize  # exact: numpy's int64 product wraps
        placed.append(RingInput(name, dt, dims, offset, nbytes))
        offset = _align(offset + nbytes)
    return tuple(placed)


def _sample_bytes(inputs: Sequence[RingInput]) -> int:
    last = inputs[-1]
    return _align(last.offset + last.nbytes)


def _slots_offset(count: int) -> int:
    return _align(HEADER_BYTES + count * ENTRY_BYTES)


def ring_size(inputs: Sequence[RingInput], slots: int) -> int:
    """Bytes of the shared-memory object for ``inputs`` and ``slots``."""
    return _slots_offset(len(inputs)) + slots * (SLOT_HEADER_BYTES + _sample_bytes(inputs))


class Segment:
    """A POSIX shared-memory object mapped into this process. A named ring stays outside
    multiprocessing's resource tracker, which would remove it when a process that opened
    it exits or is killed: the agent replaces a ring left behind itself (see
    :meth:`ShmRing.create`), so its producer learns to attach again."""

    def __init__(self, name: str, fd: int, *, tracked: bool = False) -> None:
        try:
            size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
        self.name = name
        self.tracked = tracked
        self.buf = memoryview(self._mmap if self._mmap is not None else b"")

    @classmethod
    def open(cls, name: str) -> Segment:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0)
        except FileNotFoundError as err:
            raise RingError(f"no shared-memory ring {name!r} (is the agent running with "
                            "source shm and this shmName?)") from err
        except OSError as err:
            raise RingError(f"shared memory {name!r} cannot be opened: {err}") from err
        return cls(name, fd)

    @classmethod
    def create(cls, name: str | None, size: int) -> Segment:
        """A new object of ``size`` bytes, mode 0660 (``FileExistsError`` if ``name`` is
        taken); an unnamed one gets a fresh name and is tracked (removed if we die)."""
        tracked = name is None
        name = name or f"edge-agent-{os.getpid()}-{secrets.token_hex(4)}"
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o660)
        try:
            os.fchmod(fd, 0o660)
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        if tracked:
            from multiprocessing import resource_tracker

            resource_tracker.register("/" + name, "shared_memory")
        return cls(name, fd, tracked=tracked)

    def close(self) -> None:
        """Unmap (``BufferError`` while arrays over it are still held)."""
        self.buf.release()
        if self._mmap is not None:
            self._mmap.close()

    def unlink(self) -> None:
        """Remove the name; processes that have it mapped keep their mapping."""
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink("/" + self.name)
        if self.tracked:
            from multiprocessing import resource_tracker

            resource_tracker.unregister("/" + self.name, "shared_memory")
            self.tracked = False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShmRing:
    """Either end of a ring: :meth:`create` for the agent (the consumer), :meth:`attach`
    for a producer. :attr:`inputs` says what each sample holds."""

    def __init__(self, shm: Segment, *, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.name: str = shm.name
        buf = shm.buf
        if buf is None or len(buf) < HEADER_BYTES:
            raise RingError(f"shared memory {self.name!r} is not an edge-agent ring "
                            "(too small)")
        words = buf[:HEADER_BYTES].cast("Q")
        magic, count, slots = words[W_MAGIC], words[W_INPUTS], words[W_SLOTS]
        sample_bytes = words[W_BYTES]
        words.release()
        if magic != MAGIC or not 1 <= count <= MAX_INPUTS or slots < 1:
            raise RingError(f"shared memory {self.name!r} is not an edge-agent ring")
        if len(buf) < _slots_offset(count):
            raise RingError(f"shared memory {self.name!r} is smaller than its ring header says")
        self.inputs = _checked_inputs(self.name, buf, count, words_bytes=sample_bytes)
        self.slots = int(slots)
        self.sample_bytes = _sample_bytes(self.inputs)
        self.stride = SLOT_HEADER_BYTES + self.sample_bytes
        self.base = _slots_offset(count)
        if len(buf) < ring_size(self.inputs, self.slots):
            raise RingError(f"shared memory {self.name!r} is smaller than its ring header says")
        self.words = buf.cast("Q")
        self._slot_views: list[tuple[np.ndarray, ...]] = []  # publish()'s, made once

    @classmethod
    def create(cls, inputs: Sequence[tuple[str, np.dtype | str, Sequence[int]]], *,
               name: str | None = None, slots: int = 8) -> ShmRing:
        """A new ring for samples of ``inputs`` (name, dtype, shape), under ``name`` (None:
        a fresh random name). A ring of that name left by an agent that is gone is marked
        closed (its producer attaches again) and replaced; a name held by a live agent, or
        by shared memory that is no ring, is a :class:`RingError`."""
        if slots < 1:
            raise RingError(f"a ring needs at least one slot, not {slots}")
        placed = layout(inputs)
        size = ring_size(placed, slots)
        if name is not None:
            check_ring_name(name)
        try:
            shm = Segment.create(name, size)
        except FileExistsError:
            assert name is not None
            _replace_stale(name)
            shm = Segment.create(name, size)
        except OSError as err:
            raise RingError(f"ring {name!r} cannot be created: {err}") from err
        buf = shm.buf
        words = buf.cast("Q")
        for i in range(HEADER_BYTES // 8):
            words[i] = 0
        for i, spec in enumerate(placed):
            _ENTRY.pack_into(buf, HEADER_BYTES + i * ENTRY_BYTES, spec.name.encode()[:128],
                             spec.dtype.str.encode(), spec.offset, spec.nbytes,
                             len(spec.shape), *spec.shape, *([0] * (MAX_DIMS - len(spec.shape))))
        words[W_SLOTS], words[W_BYTES] = slots, _sample_bytes(placed)
        words[W_INPUTS], words[W_OWNER] = len(placed), os.getpid()
        words[W_MAGIC] = MAGIC
        words.release()
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> ShmRing:
        """The producer's end of the ring the agent created under ``name``."""
        check_ring_name(name)
        shm = Segment.open(name)
        try:
            return cls(shm, owner=False)
        except RingError:
            shm.close()
            raise

    @property
    def closed(self) -> bool:
        return bool(self.words[W_CLOSED])

    def slot_word(self, index: int) -> int:
        """The word index of slot ``index``'s header (seq, label, time_ns)."""
        return (self.base + index * self.stride) // 8

    def views(self, index: int) -> tuple[np.ndarray, ...]:
        """One array per input over slot ``index`` (made once by each end, reused)."""
        buf = self.shm.buf
        start = self.base + index * self.stride + SLOT_HEADER_BYTES
        return tuple(np.ndarray(spec.shape, dtype=spec.dtype, buffer=buf,
                                offset=start + spec.offset) for spec in self.inputs)

    # The producer's side.
    def acquire(self, timeout_s: float | None = None) -> int:
        """Wait for a free slot; its index. :class:`RingFullError` when none frees up
        within ``timeout_s`` (None: wait as long as the agent runs), and
        :class:`RingClosedError` once the agent closed the ring."""
        words = self.words
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seq = words[W_WRITE]
        while True:
            if words[W_CLOSED]:
                raise RingClosedError(f"the agent closed ring {self.name!r}: attach again")
            if seq - words[W_READ] < self.slots:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise RingFullError(f"ring {self.name!r}: all {self.slots} slots unread "
                                    f"after {timeout_s} s (the agent is behind)")
            time.sleep(_POLL_S)
        index = seq % self.slots
        words[self.slot_word(index) + S_SEQ] = 0
        return int(index)

    def commit(self, index: int, *, label: int = -1, time_ns: int | None = None) -> int:
        """Publish slot ``index`` (filled since :meth:`acquire`); the frame's sequence."""
        words = self.words
        seq = words[W_WRITE]
        if seq % self.slots != index:
            raise RingError(f"slot {index} is not the ring's next slot")
        base = self.slot_word(index)
        words[base + S_LABEL] = label & 0xFFFFFFFFFFFFFFFF
        words[base + S_TIME] = time.time_ns() if time_ns is None else time_ns
        words[base + S_SEQ] = seq + 1
        words[W_WRITE] = seq + 1
        return int(seq + 1)

    def publish(self, sample: np.ndarray | Sequence[np.ndarray], label: int = -1, *,
                timeout_s: float = 5.0) -> bool:
        """Copy one sample (an array per input, or the array of a single input) into the
        next slot; False when the agent closed the ring or read nothing in ``timeout_s``."""
        arrays = (sample,) if isinstance(sample, np.ndarray) else tuple(sample)
        try:
            index = self.acquire(timeout_s)
        except (RingClosedError, RingFullError):
            return False
        if not self._slot_views:
            self._slot_views = [self.views(i) for i in range(self.slots)]
        for view, array in zip(self._slot_views[index], arrays, strict=True):
            view[...] = array.reshape(view.shape)
        self.commit(index, label=label)
        return True

    def close(self) -> None:
        """Let go of the ring; the agent's end also marks it closed and removes its name."""
        if self.owner:
            self.words[W_CLOSED] = 1
        self._slot_views = []
        self.words.release()
        with contextlib.suppress(BufferError):  # arrays over the slots still held: they
            self.shm.close()                     # keep the mapping until they go
        if self.owner:
            self.shm.unlink()


def _checked_inputs(name: str, buf: memoryview, count: int, *,
                    words_bytes: int) -> tuple[RingInput, ...]:
    """The input table as :func:`layout` would have placed it, or a :class:`RingError`:
    whoever can write the shared memory can write anything into it."""
    found = []
    for index in range(count):
        entry_name, dtype, offset, nbytes, ndim, *dims = _ENTRY.unpack_from(
            buf, HEADER_BYTES + index * ENTRY_BYTES)
        try:
            dt = np.dtype(dtype.rstrip(b"\0").decode("ascii"))
        except (TypeError, ValueError, SyntaxError) as err:  # numpy parses dtype strings
            raise RingError(f"shared memory {name!r}: input {index} has no valid dtype "
                            f"({dtype!r})") from err
        if not 1 <= ndim <= MAX_DIMS:
            raise RingError(f"shared memory {name!r}: input {index} has {ndim} dimensions")
        found.append(RingInput(entry_name.rstrip(b"\0").decode("utf-8", "replace"), dt,
                               tuple(dims[:ndim]), offset, nbytes))
    try:
        placed = layout([(i.name, i.dtype, i.shape) for i in found])
    except InputSpecError as err:
        raise RingError(f"shared memory {name!r}: {err}") from err
    if placed != tuple(found) or words_bytes != _sample_bytes(placed):
        raise RingError(f"shared memory {name!r}: its input table does not match its "
                        "inputs' shapes (offsets or sizes are wrong)")
    return placed


def check_ring_name(name: str) -> None:
    """A name POSIX shared memory takes: 1-200 characters, no ``/`` or NUL."""
    if not 0 < len(name) <= 200 or "/" in name or "\0" in name:
        raise RingError(f"ring name {name!r}: 1 to 200 characters, no '/'")


def _replace_stale(name: str) -> None:
    shm = Segment.open(name)
    try:
        ring = ShmRing(shm, owner=False)
    except RingError as err:
        shm.close()
        raise RingError(f"shared memory {name!r} exists and is not an edge-agent ring: "
                        "choose another ring name, or remove /dev/shm/" + name) from err
    owner = int(ring.words[W_OWNER])
    if owner != os.getpid() and _pid_alive(owner) and not ring.closed:
        ring.close()
        raise RingError(f"ring {name!r} is in use by the agent of process {owner}")
    ring.words[W_CLOSED] = 1  # its producer, if any, attaches again to the new ring
    ring.close()
    shm.unlink()
