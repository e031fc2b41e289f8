"""The hand-off between the inference thread and the publisher: a fixed ring that drops
(and counts) when full, refuses outputs of another shape, and the hook's counting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agent.core.model_layout import TensorSpec
from agent.device.results.handoff import FrameHook, Handoff

SPECS = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),
         TensorSpec(name="count", dtype="int32", shape=(2,)))


def outputs(value: float) -> tuple[np.ndarray, np.ndarray]:
    return (np.full((1, 3), value, np.float32), np.array([int(value), 7], np.int32))


def info(n: int) -> tuple[int, float, str, str, str, bool]:
    return (n, 0.0, "blue", "v1", "test", False)


def test_slots_are_copies_taken_in_order_and_freed() -> None:
    ring = Handoff(SPECS, 3)
    live = outputs(1.0)
    assert ring.put(live, info(1)) and ring.put(outputs(2.0), info(2))
    live[0][:] = 9.0  # the producer reuses its buffers: the slot keeps its copy
    index = ring.peek()
    assert index == 0 and ring.buffers[index][0].tolist() == [[1.0, 1.0, 1.0]]
    assert ring.info[index][0] == 1
    ring.release()
    assert ring.peek() == 1 and ring.buffers[1][1].tolist() == [2, 7]
    ring.release()
    assert ring.peek() is None


def test_a_full_ring_drops_and_counts_and_allocates_nothing() -> None:
    ring = Handoff(SPECS, 2)
    buffers = [tuple(id(a) for a in slot) for slot in ring.buffers]
    assert [ring.put(outputs(float(i)), info(i)) for i in range(5)] == \
        [True, True, False, False, False]
    assert ring.dropped == 3 and ring.head == 2
    ring.release()
    assert ring.put(outputs(5.0), info(5))  # the freed slot is used again
    assert [tuple(id(a) for a in slot) for slot in ring.buffers] == buffers
    assert ring.buffers[0][0][0, 0] == 5.0


@pytest.mark.parametrize("bad", [
    (np.zeros((1, 4), np.float32), np.zeros(2, np.int32)),  # another shape
    (np.zeros((1, 3), np.float64), np.zeros(2, np.int32)),  # another dtype
    (np.zeros((1, 3), np.float32),)])  # another number of outputs
def test_outputs_that_do_not_fit_the_slots_are_refused_and_counted(
        bad: tuple[np.ndarray, ...]) -> None:
    ring = Handoff(SPECS, 2)
    assert not ring.put(bad, info(1))
    assert ring.mismatched == 1 and ring.peek() is None and ring.dropped == 0


def test_the_consumer_sleeps_until_a_slot_is_filled() -> None:
    ring = Handoff(SPECS, 2)
    woke: list[float] = []

    def consume() -> None:
        started = time.monotonic()
        ring.wait(5.0)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.1)
    assert ring.waiting
    ring.put(outputs(1.0), info(1))
    thread.join(5)
    assert woke and 0.05 < woke[0] < 2.0
    ring.wait(0.01)  # something is waiting already: returns at once


def test_the_hook_counts_every_call_and_offers_every_nth_while_open() -> None:
    offered: list[int] = []
    hook = FrameHook(lambda _lane, seen: offered.append(seen) is None, every=3)
    for _ in range(10):
        hook.hook(None)  # type: ignore[arg-type]
    assert offered == [3, 6, 9] and hook.seen == 10
    hook.close()
    for _ in range(6):
        hook.hook(None)  # type: ignore[arg-type]
    assert offered == [3, 6, 9] and hook.seen == 16
    hook.open()
    hook.hook(None)  # type: ignore[arg-type]
    hook.hook(None)  # type: ignore[arg-type]
    assert offered == [3, 6, 9, 18]


def test_one_at_a_time_closes_after_each_taken_offer() -> None:
    taken = [False, True, True]
    offered: list[int] = []

    def offer(_lane: object, seen: int) -> bool:
        offered.append(seen)
        return taken[len(offered) - 1]

    hook = FrameHook(offer, every=1, one_at_a_time=True)
    for _ in range(5):
        hook.hook(None)  # type: ignore[arg-type]
    assert offered == [1, 2]  # the first was not taken: the hook stayed open for the next
    hook.open()
    hook.hook(None)  # type: ignore[arg-type]
    hook.hook(None)  # type: ignore[arg-type]
    assert offered == [1, 2, 6] and hook.seen == 7
    with pytest.raises(ValueError):
        FrameHook(offer, every=0)
