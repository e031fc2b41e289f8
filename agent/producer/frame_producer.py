"""A producer's end of the agent's frame ring: take the next free slot, fill it in place,
publish it (see :mod:`agent.producer` for the whole story)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from agent.core.errors import InputSpecError, RingError
from agent.wire.shm_ring import ShmRing

_POLL_S = 0.05


@dataclass(frozen=True)
class FrameInput:
    """One model input the ring carries: each frame holds an array of this shape and dtype."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class Frame:
    """The next free slot of the ring: one array per model input, to fill in place.

    As a context manager it is published when the block ends (with :attr:`label` and
    :attr:`capture_time`), and given back unpublished when the block raises. Do not touch
    its arrays after it is published: the agent reads them.
    """

    def __init__(self, producer: FrameProducer, index: int,
                 arrays: tuple[np.ndarray, ...]) -> None:
        self._producer = producer
        self.index = index
        self.arrays = arrays
        self.label = -1
        self.capture_time: float | None = None

    def __getitem__(self, key: str | int) -> np.ndarray:
        """The array of input ``key`` (its name, or its position)."""
        if isinstance(key, int):
            return self.arrays[key]
        for spec, array in zip(self._producer.inputs, self.arrays, strict=True):
            if spec.name == key:
                return array
        raise InputSpecError(f"no input {key!r} in ring {self._producer.name!r} (inputs: "
                             f"{', '.join(s.name for s in self._producer.inputs)})")

    @property
    def array(self) -> np.ndarray:
        """The array of a single-input model."""
        if len(self.arrays) != 1:
            raise InputSpecError(f"ring {self._producer.name!r} carries {len(self.arrays)} "
                                 "inputs: use frame[name]")
        return self.arrays[0]

    def put(self, value: np.ndarray, key: str | int = 0) -> None:
        """Copy ``value`` into input ``key``: an :class:`InputSpecError` (nothing written)
        when its shape or dtype is not the input's (a leading batch of 1 may be left out)."""
        target = self[key]
        array = np.asarray(value)
        shape = array.shape
        if array.dtype != target.dtype or (shape != target.shape and
                                           (1, *shape) != target.shape):
            name = key if isinstance(key, str) else self._producer.inputs[key].name
            raise InputSpecError(f"ring {self._producer.name!r} input {name!r} is "
                                 f"{target.dtype}{list(target.shape)}; this frame is "
                                 f"{array.dtype}{list(shape)}")
        target[...] = array.reshape(target.shape)

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self._producer.publish(self.label, capture_time=self.capture_time)
        else:
            self._producer.discard()


class FrameProducer:
    """The camera process's end of the ring an agent created (``source: shm``)."""

    def __init__(self, ring: ShmRing) -> None:
        self._ring = ring
        self.name = ring.name
        self.inputs = tuple(FrameInput(i.name, i.dtype, i.shape) for i in ring.inputs)
        self.slots = ring.slots
        self._views = [ring.views(i) for i in range(ring.slots)]
        self._pending: Frame | None = None
        self.published = 0

    @classmethod
    def attach(cls, name: str, *, wait_s: float = 0.0) -> FrameProducer:
        """Attach to the agent's ring ``name`` (its ``shmName``), waiting up to ``wait_s``
        for the agent to create it. :class:`RingError` when there is no such ring (after
        the wait) or the shared memory of that name is no ring."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                ring = ShmRing.attach(name)
            except RingError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_POLL_S)
                continue
            if not ring.closed:
                return cls(ring)
            ring.close()  # a ring its agent closed: wait for the new one
            if time.monotonic() >= deadline:
                raise RingError(f"ring {name!r} was closed by its agent")
            time.sleep(_POLL_S)

    def frame(self, timeout_s: float | None = None) -> Frame:
        """The next free slot, to fill in place (the same one until it is published or
        discarded). Waits up to ``timeout_s`` (None: as long as it takes) for the agent to
        free one, else :class:`~agent.core.errors.RingFullError` (drop this frame);
        :class:`~agent.core.errors.RingClosedError` once the agent closed the ring."""
        if self._pending is None:
            index = self._ring.acquire(timeout_s)
            self._pending = Frame(self, index, self._views[index])
        return self._pending

    def publish(self, label: int = -1, *, capture_time: float | None = None) -> int:
        """Hand the frame taken by :meth:`frame` to the agent, with its ``label`` (-1:
        none) and ``capture_time`` (wall-clock seconds; default now); its sequence number
        (the agent's ``frame_id`` for it)."""
        frame = self._pending
        if frame is None:
            raise RingError("no frame to publish: take one with frame() first")
        time_ns = None if capture_time is None else int(capture_time * 1e9)
        seq = self._ring.commit(frame.index, label=label, time_ns=time_ns)
        self._pending = None
        self.published += 1
        return seq

    def discard(self) -> None:
        """Give the frame taken by :meth:`frame` back unpublished."""
        self._pending = None

    def write(self, values: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray],
              *, label: int = -1, capture_time: float | None = None,
              timeout_s: float | None = None) -> int:
        """Copy one frame in and publish it: an array (single-input models), one per
        input in order, or a mapping by input name; its sequence number. A value that does
        not fit its input is an :class:`InputSpecError` and publishes nothing."""
        if isinstance(values, np.ndarray):
            items: list[tuple[str | int, np.ndarray]] = [(0, values)]
        elif isinstance(values, Mapping):
            items = list(values.items())
        else:
            items = list(enumerate(values))
        names = {spec.name for spec in self.inputs}
        keys = {key if isinstance(key, str) else self.inputs[key].name
                for key, _ in items if isinstance(key, str) or key < len(self.inputs)}
        if len(items) != len(self.inputs) or keys != names:
            raise InputSpecError(f"ring {self.name!r} frames hold {len(self.inputs)} "
                                 f"input(s) ({', '.join(sorted(names))}); got "
                                 f"{len(items)} value(s)")
        frame = self.frame(timeout_s)
        try:
            for key, value in items:
                frame.put(value, key)
        except BaseException:
            self.discard()
            raise
        return self.publish(label, capture_time=capture_time)

    def close(self) -> None:
        """Let go of the ring (the agent keeps it)."""
        self._pending = None
        self._views = []
        self._ring.close()

    def __enter__(self) -> FrameProducer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
