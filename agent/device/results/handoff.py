"""The hand-off between the inference thread and the result publisher: a fixed ring of
preallocated output slots, and the hook each loop step calls.

The hook is the only part of a result stream on the inference path. For every inference
it counts one and, for every Nth while the publisher's rate cap is open, copies the
outputs into the next free slot (the outputs of a classifier are a few dozen bytes);
nothing else. When every slot is taken the publisher is behind: the inference is
dropped and counted, so the loop never waits and memory never grows. The publisher
(:class:`~agent.device.results.stream.ResultStream`) ranks, encodes and publishes each
slot on its own thread, then frees it.

There is one producer at a time: the inference thread, which runs the loop's steps and,
with a continuous source, answers API requests too; with no continuous source (``api``)
requests are answered by their callers' threads one at a time, under the runtime's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from agent.core.model_layout import TensorSpec
from agent.device.inference.lane import Lane

# A slot's description: frame id, frame time (Unix s), variant, model version, source
# name, and whether it answers an API request.
SlotInfo = tuple[int, float, str, str, str, bool]


class Handoff:
    """A single-producer, single-consumer ring of ``slots`` copies of the model's outputs."""

    def __init__(self, outputs: Sequence[TensorSpec], slots: int) -> None:
        if slots < 1:
            raise ValueError("a hand-off ring needs at least one slot")
        self.specs = tuple(outputs)
        self.slots = slots
        self.buffers = [tuple(np.zeros(s.shape, s.dtype) for s in self.specs)
                        for _ in range(slots)]
        self.info: list[SlotInfo] = [(0, 0.0, "", "", "", False)] * slots
        self.head = 0  # slots filled, ever (the producer's)
        self.tail = 0  # slots freed, ever (the consumer's)
        self.dropped = 0  # offers refused: no free slot
        self.mismatched = 0  # offers refused: outputs of another shape than the slots'
        self.waiting = False  # the consumer sleeps on ``wake``
        self.wake = threading.Event()

    def put(self, outputs: Sequence[np.ndarray], info: SlotInfo) -> bool:
        """Copy ``outputs`` into the next free slot (producer); False when none is free."""
        head = self.head
        if head - self.tail >= self.slots:
            self.dropped += 1
            return False
        buffers = self.buffers[head % self.slots]
        if len(outputs) != len(buffers):
            self.mismatched += 1
            return False
        for dest, src in zip(buffers, outputs, strict=True):
            if dest.shape != src.shape or dest.dtype != src.dtype:
                self.mismatched += 1
                return False
            np.copyto(dest, src)
        self.info[head % self.slots] = info
        self.head = head + 1
        if self.waiting:
            self.wake.set()
        return True

    def peek(self) -> int | None:
        """The oldest filled slot's index (consumer), or None when there is none."""
        tail = self.tail
        return None if tail == self.head else tail % self.slots

    def release(self) -> None:
        """Free the oldest filled slot (consumer), once its data is no longer needed."""
        self.tail += 1

    def wait(self, timeout_s: float) -> None:
        """Sleep until the producer fills a slot (or ``timeout_s``, or :meth:`interrupt`)."""
        self.waiting = True
        try:
            if self.peek() is None:
                self.wake.wait(timeout_s)
        finally:
            self.waiting = False
            self.wake.clear()

    def interrupt(self) -> None:
        self.wake.set()


class FrameHook:
    """The loop's hook: :attr:`hook` is called with the lane that served each inference.

    ``offer(lane, seen)`` hands one inference over (``seen``: how many the hook has been
    called for, this one included) and says whether it took it. ``every`` is the
    policy's ``everyN``: only every Nth call offers. While the hook is closed (the
    publisher's rate cap), calls only count; with ``one_at_a_time`` (a rate cap is set:
    one result per opening is all it can publish) the hook closes itself after each
    inference it handed over, until the publisher opens it again. The hook is a closure
    over plain local variables: at a few microseconds per inference, an attribute
    lookup or a lock would show.
    """

    def __init__(self, offer: Callable[[Lane, int], bool], every: int, *,
                 one_at_a_time: bool = False) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        seen = 0
        countdown = every
        closed = False

        def hook_every(lane: Lane) -> None:
            nonlocal seen, countdown, closed
            seen += 1
            countdown -= 1
            if countdown:
                return
            countdown = every
            if closed:
                return
            if offer(lane, seen) and one_at_a_time:
                closed = True

        def hook_all(lane: Lane) -> None:
            nonlocal seen, closed
            seen += 1
            if closed:
                return
            if offer(lane, seen) and one_at_a_time:
                closed = True

        def set_closed(value: bool) -> None:
            nonlocal closed
            closed = value

        def read_seen() -> int:
            return seen

        self.every = every
        self.hook: Callable[[Lane], None] = hook_all if every == 1 else hook_every
        self._set_closed = set_closed
        self._seen = read_seen

    def close(self) -> None:
        self._set_closed(True)

    def open(self) -> None:
        self._set_closed(False)

    @property
    def seen(self) -> int:
        """Inferences the hook was called for."""
        return self._seen()
