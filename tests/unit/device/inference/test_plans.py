"""The per-inference plans, the loop's plan switching and the router's reports, on a fake
backend: a four-class "model" whose scores are its input (or, for a wrong build, the input
reversed), fed one-hot samples so that every answer is known."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from unittest import mock

import numpy as np
import pytest

from agent.core.errors import AgentError, InferenceError, ModelLoadError
from agent.core.model_layout import TensorSpec
from agent.device.inference import plans
from agent.device.inference.lane import Lane
from agent.device.inference.plans import Plan, ShadowStats
from agent.device.inference.router import LaneReport, RouterSnapshot, VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource
from agent.tools.bench.alloc import bytes_per_call

CLASSES = 4
SPEC = (TensorSpec(name="x", dtype="float32", shape=(1, CLASSES)),)


class Boom(Exception):
    """What the fake runtime raises from its raw runner."""


class FakeBackend:
    """Scores = input (or the input reversed); fails while ``failing``, and ``fatal``
    makes a failure translate to an error that is not an inference error."""

    name = "fake"
    inputs: tuple[TensorSpec, ...] = SPEC
    outputs: tuple[TensorSpec, ...] = (
        TensorSpec(name="scores", dtype="float32", shape=(1, CLASSES)),)

    def __init__(self, *, wrong: bool = False) -> None:
        self.wrong = wrong
        self.failing = False
        self.fatal = False
        self.runs = 0
        self.closed = False
        self._in = np.zeros((1, CLASSES), np.float32)
        self._out = np.zeros((1, CLASSES), np.float32)

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        self._in = inputs[0]
        self._view = self._in[:, ::-1] if self.wrong else self._in
        return (self._out,)

    def run(self) -> None:
        self.runs += 1
        if self.failing:
            raise Boom("fake runtime failed")
        np.copyto(self._out, self._view)

    def runner(self) -> Callable[[], object]:
        return self.run

    def translate(self, err: Exception) -> AgentError:
        return ModelLoadError(str(err)) if self.fatal else InferenceError(str(err))

    def describe(self) -> dict[str, str]:
        return {"library": "fake"}

    def close(self) -> None:
        self.closed = True


def one_hot(labelled: bool = True) -> Callable[[tuple[np.ndarray, ...]], ReplaySource]:
    x = np.eye(CLASSES, dtype=np.float32)
    y = np.arange(CLASSES) if labelled else np.full(CLASSES, -1)
    return lambda buffers: ReplaySource(buffer=buffers[0], x=x, y=y)


def make_loop(backend: FakeBackend | None = None, *, check_every: int = 1,
              labelled: bool = True) -> InferenceLoop:
    return InferenceLoop(backend=backend or FakeBackend(), make_source=one_hot(labelled),
                         check_every=check_every)


def steps(plan: Plan, n: int) -> None:
    for _ in range(n):
        plan.step()


def installed(loop: InferenceLoop) -> tuple[str, tuple[Lane, ...]]:
    """The name and lanes of the plan the loop runs now."""
    return loop.plan.name, loop.plan.lanes


# ---- the loop and its plan ---------------------------------------------------------------


def test_the_loop_starts_on_the_serve_plan_of_its_own_lane() -> None:
    loop = make_loop(check_every=3)
    assert loop.plan.name == "serve" and loop.plan.lanes == (loop.lane,)
    assert loop.step is loop.plan.step, "the step is bound once, when the plan is installed"
    stats = loop.run(max_inferences=12)
    assert stats is loop.stats is loop.lane.stats
    assert (stats.inferences, stats.checked, stats.correct, stats.errors) == (12, 4, 4, 0)
    assert loop.steps_done == 12 and not loop.running


def test_use_installs_a_plan_and_the_next_step_runs_it() -> None:
    loop = make_loop()
    served = loop.plan
    calls: list[int] = []
    other = Plan("serve", (loop.lane,), lambda: calls.append(1))
    loop.use(other)
    assert loop.plan is other and loop.step is other.step
    loop.run(max_inferences=5)
    assert len(calls) == 5 and loop.stats.inferences == 0
    loop.use(served)
    loop.run(max_inferences=3)
    assert len(calls) == 5 and loop.stats.inferences == 3


def test_a_plan_installed_while_the_loop_runs_lands_between_two_inferences() -> None:
    loop = make_loop()
    green = Lane.bind(FakeBackend(), loop.inputs)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        for percent in (10, 50, 90):
            loop.use(plans.weighted(loop.source.fill, loop.lane, green, percent))
            mark = loop.steps_done
            deadline = time.monotonic() + 5
            while loop.steps_done < mark + 200 and time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        stop.set()
        thread.join(5)
    assert green.stats.inferences > 0 and loop.lane.stats.inferences > 0
    assert green.stats.errors == loop.lane.stats.errors == 0


# ---- serve --------------------------------------------------------------------------------


def test_serve_checks_every_nth_labelled_inference() -> None:
    loop = make_loop()
    lane = loop.lane
    steps(plans.serve(loop.source.fill, lane, check_every=4), 16)
    assert (lane.stats.inferences, lane.stats.checked, lane.stats.correct) == (16, 4, 4)
    with pytest.raises(ValueError):
        plans.serve(loop.source.fill, lane, check_every=0)


def test_serve_checks_nothing_without_labels_and_counts_wrong_answers() -> None:
    loop = make_loop(labelled=False)
    steps(loop.plan, 8)
    assert loop.stats.inferences == 8 and loop.stats.checked == 0
    wrong = make_loop(FakeBackend(wrong=True))
    steps(wrong.plan, 8)
    assert wrong.stats.checked == 8 and wrong.stats.correct == 0
    assert wrong.stats.accuracy == 0.0


def test_serve_counts_an_inference_error_and_raises_any_other() -> None:
    backend = FakeBackend()
    loop = make_loop(backend)
    backend.failing = True
    steps(loop.plan, 3)
    assert loop.stats.errors == 3 and loop.stats.inferences == 0
    assert loop.stats.last_error == "fake runtime failed"
    backend.fatal = True
    with pytest.raises(ModelLoadError):
        loop.step()


# ---- shadow -------------------------------------------------------------------------------


def _two_lanes(*, wrong_green: bool = False) -> tuple[InferenceLoop, Lane, FakeBackend]:
    loop = make_loop()
    green_backend = FakeBackend(wrong=wrong_green)
    return loop, Lane.bind(green_backend, loop.inputs), green_backend


def test_shadow_runs_green_on_every_nth_input_and_compares_it_with_blue() -> None:
    loop, green, _ = _two_lanes()
    stats = ShadowStats()
    plan = plans.shadow(loop.source.fill, loop.lane, green, stats, every=2)
    assert plan.name == "shadow" and plan.lanes == (loop.lane, green)
    steps(plan, 10)
    assert loop.lane.stats.inferences == 10 and green.stats.inferences == 5
    assert stats.compared == 5 and stats.agreement == 1.0 and stats.drift == 0.0
    assert green.stats.checked == loop.lane.stats.checked == 5
    assert green.stats.accuracy == 1.0


def test_shadow_measures_a_wrong_green_and_a_failing_green_leaves_blue_alone() -> None:
    loop, green, green_backend = _two_lanes(wrong_green=True)
    stats = ShadowStats()
    plan = plans.shadow(loop.source.fill, loop.lane, green, stats, every=1)
    steps(plan, 8)
    assert stats.compared == 8 and stats.agreement == 0.0
    assert stats.drift is not None and stats.drift > 0
    green_backend.failing = True
    steps(plan, 4)
    assert green.stats.errors == 4 and stats.compared == 8
    assert loop.lane.stats.inferences == 12 and loop.lane.stats.errors == 0


# ---- weighted -----------------------------------------------------------------------------


def test_weighted_sends_exactly_the_green_percent_of_each_hundred() -> None:
    loop, green, _ = _two_lanes()
    plan = plans.weighted(loop.source.fill, loop.lane, green, 25, check_every=5)
    assert plan.name == "weighted" and plan.lanes == (loop.lane, green)
    steps(plan, 200)
    assert green.stats.inferences == 50 and loop.lane.stats.inferences == 150
    assert green.stats.checked + loop.lane.stats.checked == 40


def test_weighted_answers_a_failed_green_inference_on_blue() -> None:
    loop, green, green_backend = _two_lanes()
    green_backend.failing = True
    steps(plans.weighted(loop.source.fill, loop.lane, green, 50), 100)
    assert green.stats.errors == 50 and green.stats.inferences == 0
    assert loop.lane.stats.inferences == 100 and loop.lane.stats.errors == 0


def test_serve_and_weighted_steps_allocate_no_array() -> None:
    # The clock's integers and the fake runtime's own call cost a few small objects; one
    # numpy array (its header alone is over 100 bytes) would break the budget.
    loop, green, _ = _two_lanes()
    for plan in (plans.serve(loop.source.fill, loop.lane, check_every=16),
                 plans.weighted(loop.source.fill, loop.lane, green, 10, check_every=16)):
        assert bytes_per_call(plan.step) <= 128, plan.name


# ---- the router ---------------------------------------------------------------------------


@pytest.fixture
def router() -> VariantRouter:
    return VariantRouter(loop=make_loop(), blue_version="v1")


def test_the_router_installs_each_mode_through_the_loops_use(router: VariantRouter) -> None:
    loop = router.loop
    with mock.patch.object(loop, "use", wraps=loop.use) as use:
        router.load_green(FakeBackend(), "v2")
        green = router.green
        assert green is not None
        blue = router.blue
        assert installed(loop) == ("serve", (blue.lane,))
        router.shadow(0.5)
        assert installed(loop) == ("shadow", (blue.lane, green.lane))
        router.set_weights(90, 10)
        assert installed(loop) == ("weighted", (blue.lane, green.lane))
        router.set_weights(0, 100)
        assert installed(loop) == ("serve", (green.lane,))
        router.set_weights(100, 0)
        assert installed(loop) == ("serve", (blue.lane,))
        router.promote()
        assert installed(loop) == ("serve", (green.lane,)) and router.blue is green
    assert use.call_count == 6
    assert loop.step is loop.plan.step


def test_lanes_report_blue_then_green_with_their_live_stats(router: VariantRouter) -> None:
    blue_stats = router.blue.lane.stats
    assert router.lanes() == [LaneReport("blue", "v1", blue_stats)]
    router.load_green(FakeBackend(), "v2")
    green = router.green
    assert green is not None
    reports = router.lanes()
    assert [(r.variant, r.model_version) for r in reports] == [("blue", "v1"), ("green", "v2")]
    assert reports[0].stats is blue_stats and reports[1].stats is green.lane.stats
    router.set_weights(50, 50)
    steps(router.loop.plan, 10)
    assert reports[1].stats.inferences == 5, "the report holds the live counters"
    with pytest.raises(AttributeError):
        reports[0].variant = "green"  # type: ignore[misc]
    router.promote()
    assert [(r.variant, r.model_version) for r in router.lanes()] == [("blue", "v2")]


def test_the_snapshot_gives_what_a_state_report_reads(router: VariantRouter) -> None:
    assert router.snapshot() == RouterSnapshot(models={"blue": "v1"}, mode="serve",
                                               weights=(100, 0), green_trial=None)
    router.load_green(FakeBackend(), "v2")
    snap = router.snapshot()
    assert snap.models == router.models() == {"blue": "v1", "green": "v2"}
    assert (snap.mode, snap.green_trial) == ("serve", None), "loaded, not on trial"
    green = router.green
    assert green is not None
    green.since = time.monotonic() - 5.0
    changes: list[tuple[str, Callable[[], None]]] = [
        ("shadow", lambda: router.shadow(1.0)), ("weighted", lambda: router.set_weights(80, 20))]
    for mode, change in changes:
        change()
        snap = router.snapshot()
        assert snap.mode == mode
        assert snap.mode == router.mode
        assert list(snap.weights) == list(router.weights)
        trial = snap.green_trial
        assert trial is not None and set(trial) == {"candidate", "kind", "elapsed_s"}
        assert (trial["candidate"], trial["kind"]) == ("v2", mode)
        assert 5.0 <= trial["elapsed_s"] < 60  # type: ignore[operator]
    assert router.snapshot().weights == (80, 20)
    router.promote()
    assert router.snapshot() == RouterSnapshot(models={"blue": "v2"}, mode="serve",
                                               weights=(100, 0), green_trial=None)


def test_rollback_and_confirm_close_the_model_that_leaves(router: VariantRouter) -> None:
    first = router.blue.lane.backend
    candidate = FakeBackend()
    router.load_green(candidate, "v2")
    router.promote()
    kept = router.previous
    assert kept is not None and kept.lane.backend is first
    assert not first.closed  # type: ignore[attr-defined]
    assert router.rollback() == "v2" and candidate.closed
    assert router.snapshot().models == {"blue": "v1"}
    assert installed(router.loop) == ("serve", (router.blue.lane,))
    again = FakeBackend()
    router.load_green(again, "v3")
    router.promote()
    router.confirm()
    assert first.closed and router.previous is None  # type: ignore[attr-defined]
    assert [(r.variant, r.model_version) for r in router.lanes()] == [("blue", "v3")]
