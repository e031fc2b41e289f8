"""Blue/green inside one loop with real DLR backends: shadow, weights, promote, rollback,
and the local guardrails on the deliberately bad builds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.device.inference.guardrails import Guardrails, evaluate
from agent.device.inference.router import VariantError, VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, load_backend
from agent.device.runtime.base import Backend


def _backend(models: Path, name: str) -> Backend:
    res = resolve_model(models / name, backend="dlr", profile=detect_profile())
    return load_backend(res.load_dir, DlrConfig())


@pytest.fixture
def running(built_models: Path) -> Iterator[tuple[InferenceLoop, VariantRouter]]:
    x, y = load_testset(built_models / "digits-v1" / "testset.npz")
    loop = InferenceLoop(backend=_backend(built_models, "digits-v1"),
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=y),
                         rate_hz=0)
    router = VariantRouter(loop=loop, blue_version="digits-v1")
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    yield loop, router
    stop.set()
    thread.join(10)
    loop.close()


def _wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    assert cond(), "condition not met"  # type: ignore[operator]


def test_shadow_weights_promote_rollback_without_a_failed_inference(
        running: tuple[InferenceLoop, VariantRouter], built_models: Path) -> None:
    _, router = running
    with pytest.raises(VariantError):
        router.promote()
    router.load_green(_backend(built_models, "digits-v2"), "digits-v2")
    green = router.green
    assert green is not None and router.mode == "serve"
    router.shadow(sample_rate=0.5)
    _wait(lambda: router.shadow_stats.compared >= 500)
    assert (router.shadow_stats.agreement or 0) > 0.9
    assert green.lane.stats.checked > 0 and green.lane.stats.accuracy >= 0.95  # type: ignore[operator]

    router.set_weights(90, 10)
    before_blue, before_green = router.blue.lane.stats.inferences, green.lane.stats.inferences
    time.sleep(0.5)
    blue_n = router.blue.lane.stats.inferences - before_blue
    green_n = green.lane.stats.inferences - before_green
    assert 0.07 < green_n / (blue_n + green_n) < 0.13, "10% to green, deterministically"

    old_blue = router.blue
    router.promote()
    assert router.blue is green and router.previous is old_blue
    before = green.lane.stats.inferences
    time.sleep(0.2)
    assert green.lane.stats.inferences > before, "the promoted model serves"
    assert router.rollback() == "digits-v2"
    assert router.blue is old_blue and router.models() == {"blue": "digits-v1"}
    for lane in (old_blue.lane, green.lane):
        assert lane.stats.errors == 0, lane.stats.last_error


def test_wrong_build_breaks_the_agreement_guardrail_in_shadow(
        running: tuple[InferenceLoop, VariantRouter], built_models: Path) -> None:
    _, router = running
    router.load_green(_backend(built_models, "digits-v1-wrong"), "digits-v1-wrong")
    router.shadow(sample_rate=1.0)
    limits = Guardrails(min_samples=100)
    _wait(lambda: router.shadow_stats.compared >= 100)
    breach = evaluate(router, limits)
    assert breach is not None and breach.rule == "agreement"
    assert router.rollback() == "digits-v1-wrong" and router.mode == "serve"


def test_slow_build_breaks_the_latency_guardrail_in_weighted_mode(
        running: tuple[InferenceLoop, VariantRouter], built_models: Path) -> None:
    _, router = running
    router.load_green(_backend(built_models, "digits-v1-slow"), "digits-v1-slow")
    router.set_weights(50, 50)
    limits = Guardrails(min_samples=20)
    green = router.green
    assert green is not None
    _wait(lambda: green.lane.stats.inferences >= 20)
    breach = evaluate(router, limits)
    assert breach is not None and breach.rule == "p99_latency_ratio", breach
    router.rollback()
    blue_before = router.blue.lane.stats.inferences
    time.sleep(0.2)
    assert router.blue.lane.stats.inferences > blue_before and router.green is None
    assert green.lane.stats.errors == 0 and router.blue.lane.stats.errors == 0
