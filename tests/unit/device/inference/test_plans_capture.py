"""The plans' capture hooks on a fake backend: where each hook is called, with what, and
that a plan built without hooks runs the step it always ran."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from agent.core.errors import AgentError, InferenceError
from agent.core.model_layout import TensorSpec
from agent.device.inference import plans
from agent.device.inference.capture_hooks import CaptureHooks
from agent.device.inference.lane import Lane
from agent.device.inference.plans import ShadowStats

CLASSES = 4
SPEC = (TensorSpec(name="x", dtype="float32", shape=(1, CLASSES)),)


class Boom(Exception):
    pass


class Fake:
    """Scores = input (``wrong``: reversed); raises while ``failing``."""

    name = "fake"
    inputs = SPEC
    outputs = (TensorSpec(name="scores", dtype="float32", shape=(1, CLASSES)),)

    def __init__(self, *, wrong: bool = False) -> None:
        self.wrong, self.failing = wrong, False
        self._out = np.zeros((1, CLASSES), np.float32)

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        self._view = inputs[0][:, ::-1] if self.wrong else inputs[0]
        return (self._out,)

    def runner(self) -> object:
        def run() -> None:
            if self.failing:
                raise Boom("fake runtime failed")
            np.copyto(self._out, self._view)
        return run

    def translate(self, err: Exception) -> AgentError:
        return InferenceError(str(err))


class Feed:
    """One-hot samples, class ``i % CLASSES`` at step i; counts fills."""

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer, self.n = buffer, 0

    def fill(self) -> int:
        self.buffer[...] = 0
        self.buffer[0, self.n % CLASSES] = 1.0
        self.n += 1
        return (self.n - 1) % CLASSES


def _lane(buffer: np.ndarray, **kw: bool) -> tuple[Lane, Fake]:
    backend = Fake(**kw)
    return Lane.bind(backend, (buffer,)), backend  # type: ignore[arg-type]


def test_serve_calls_served_when_its_countdown_ends() -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    feed = Feed(buffer)
    lane, _ = _lane(buffer)
    calls: list[int] = []

    def served(got: Lane, label: int) -> int:
        assert got is lane
        calls.append(feed.n)
        return 3

    step = plans.serve(feed.fill, lane, capture=CaptureHooks(served=served, first=2)).step
    for _ in range(11):
        step()
    assert calls == [2, 5, 8, 11]
    assert lane.stats.inferences == 11 and lane.stats.correct == 11


def test_failed_sees_the_failing_input_and_served_is_not_called() -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    feed = Feed(buffer)
    lane, backend = _lane(buffer)
    seen: list[tuple[str, np.ndarray]] = []
    served: list[int] = []
    hooks = CaptureHooks(served=lambda _l, _y: served.append(1) or 1, first=1,
                         failed=lambda _l, err: seen.append((str(err), buffer.copy())))
    step = plans.serve(feed.fill, lane, capture=hooks).step
    step()
    backend.failing = True
    step()
    assert lane.stats.errors == 1 and served == [1]
    assert seen[0][0] == "fake runtime failed"
    assert seen[0][1].argmax() == 1, "the input of the failed inference, still in place"


def test_without_hooks_the_plan_is_the_plain_step() -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    lane, _ = _lane(buffer)
    fill = Feed(buffer).fill
    plain = plans.serve(fill, lane).step
    assert plans.serve(fill, lane, capture=None).step.__code__ is plain.__code__
    hooked = plans.serve(fill, lane, capture=CaptureHooks()).step
    assert hooked.__code__ is not plain.__code__
    for _ in range(5):
        hooked()  # no hook set: nothing to call, nothing fails
    assert lane.stats.inferences == 5


def test_shadow_compares_then_counts_down() -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    feed = Feed(buffer)
    blue, _ = _lane(buffer)
    green, _ = _lane(buffer, wrong=True)
    events: list[tuple[str, int, bool | None]] = []
    hooks = CaptureHooks(
        served=lambda lane, _y: events.append(("served", feed.n, None)) or 2, first=2,
        compared=lambda b, g, agreed, drift: events.append(("compared", feed.n, agreed)))
    stats = ShadowStats()
    step = plans.shadow(feed.fill, blue, green, stats, every=2, capture=hooks).step
    for _ in range(4):
        step()
    # one-hot class (n-1) % 4 reversed is class 3 - (n-1) % 4: they never agree on 4 classes
    assert events == [("compared", 2, False), ("served", 2, None), ("compared", 4, False),
                      ("served", 4, None)]
    assert stats.compared == 2 and stats.agreed == 0


def test_weighted_reports_the_lane_that_served_and_a_green_failure() -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    feed = Feed(buffer)
    blue, _ = _lane(buffer)
    green, green_backend = _lane(buffer)
    served: list[Lane] = []
    failed: list[Lane] = []
    hooks = CaptureHooks(served=lambda lane, _y: served.append(lane) or 1, first=1,
                         failed=lambda lane, _e: failed.append(lane))
    step = plans.weighted(feed.fill, blue, green, 50, capture=hooks).step
    for _ in range(4):
        step()
    assert served == [blue, green, blue, green]
    green_backend.failing = True
    step()
    step()  # green's turn: it fails, blue answers
    assert failed == [green] and served[-1] is blue
    assert blue.stats.errors == 0 and green.stats.errors == 1


@pytest.mark.parametrize("mode", ["serve", "shadow", "weighted"])
def test_a_countdown_restarts_at_first_in_every_plan(mode: str) -> None:
    buffer = np.zeros((1, CLASSES), np.float32)
    feed = Feed(buffer)
    blue, _ = _lane(buffer)
    green, _ = _lane(buffer)
    calls: list[int] = []
    hooks = CaptureHooks(served=lambda _l, _y: calls.append(feed.n) or 1000, first=3)
    plan = plans.serve(feed.fill, blue, capture=hooks) if mode == "serve" else \
        plans.shadow(feed.fill, blue, green, ShadowStats(), every=1, capture=hooks) \
        if mode == "shadow" else plans.weighted(feed.fill, blue, green, 10, capture=hooks)
    for _ in range(10):
        plan.step()
    assert calls == [3]
