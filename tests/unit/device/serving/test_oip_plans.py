"""Prepared shared-memory requests: the response template writes exactly what the codec
writes, regions keep one view per place and drop them on unregister, the registry's
generation tells a plan when its regions changed, and the plan cache stays bounded."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from agent.core.errors import RegionError
from agent.core.model_layout import TensorSpec
from agent.device.serving import oip_codec as codec
from agent.device.serving import oip_plans as plans
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceResult

SCORES = TensorSpec(name="scores", dtype="float32", shape=(1, 10))
BOXES = TensorSpec(name="boxes", dtype="int32", shape=(2, 4))
F32 = np.dtype("float32")


@pytest.fixture
def segment() -> Iterator[shared_memory.SharedMemory]:
    made = shared_memory.SharedMemory(create=True, size=4096,
                                      name=f"plans-{uuid.uuid4().hex[:12]}")
    yield made
    made.close()
    made.unlink()


def _encoded(region: str = "out") -> list[codec.EncodedOutput]:
    return [codec.EncodedOutput(SCORES, np.zeros((1, 10), np.float32),
                                shm=codec.ShmRef(region, 256, 40)),
            codec.EncodedOutput(BOXES, np.zeros((2, 4), np.int32),
                                shm=codec.ShmRef(region, 512, 32))]


def _result(variant: str, version: str, queue: float, model: float, total: float
            ) -> InferenceResult:
    return InferenceResult(outputs=(), variant=variant, version=version, queue_us=queue,
                           model_us=model, total_us=total)


def _plan(template: str) -> plans.ShmPlan:
    return plans.ShmPlan(generation=0, version=None, inputs=(), outputs=(), regions=(),
                         timeout_s=None, template=template)


@pytest.mark.parametrize(("model", "request_id", "region"), [
    ("digits", None, "out"),
    ("digits", "frame-17", "out"),
    ("100%-model", "id with %s and %d and \"quotes\"", "r%1"),
    ("modèle", "ünï", "zone ✓"),
])
def test_the_template_writes_what_the_codec_writes(model: str, request_id: str | None,
                                                   region: str) -> None:
    plan = _plan(plans.response_template(model, request_id, _encoded(region)))
    for result in (_result("blue", "digits-v1", 5.94, 135.35, 141.29),
                   _result("green", "v2 \"beta\" ✓", 0.0, 0.04999, 1e15 + 0.25),
                   _result("blue", "%s%%", 12345.65, 7.0, 99999.95)):
        head = plans.response_head(model, request_id, version=result.version,
                                   variant=result.variant, queue_us=round(result.queue_us, 1),
                                   model_us=round(result.model_us, 1),
                                   total_us=round(result.total_us, 1))
        want, buffers, copied = codec.encode_infer_response(head, _encoded(region))
        assert plan.header(result) == want and buffers == [] and copied == 0
        assert json.loads(plan.header(result))["model_version"] == result.version


def test_the_plan_cache_is_bounded_and_drops_only_the_plan_it_was_given() -> None:
    cache = plans.PlanCache(size=3)
    made = [_plan(str(i)) for i in range(4)]
    for i, plan in enumerate(made[:3]):
        cache.put(("/p", bytes([i])), plan)
    cache.put(("/p", b"\x00"), made[0])  # already there: nothing forgotten
    assert len(cache) == 3
    cache.put(("/p", b"new"), made[3])  # full: forgets what it had, keeps the new one
    assert len(cache) == 1 and cache.get(("/p", b"new")) is made[3]
    cache.drop(("/p", b"new"), made[0])  # another plan than the one kept: no change
    assert cache.get(("/p", b"new")) is made[3]
    cache.drop(("/p", b"new"), made[3])
    assert cache.get(("/p", b"new")) is None and len(cache) == 0


def test_a_region_returns_one_view_per_place_and_checks_each_new_one(
        segment: shared_memory.SharedMemory) -> None:
    registry = RegionRegistry()
    region = registry.register("r", segment.name, 0, 1024)
    first = region.view(0, 256, F32, (1, 64), what="input 'x'")
    assert region.view(0, 256, F32, (1, 64), what="input 'x'") is first
    assert region.view(256, 256, F32, (1, 64), what="input 'x'") is not first
    assert region.view(0, 256, F32, (64, 1), what="input 'x'").shape == (64, 1)
    first[0, :3] = (1.0, 2.0, 3.0)  # a view on the segment itself, not a copy
    assert np.frombuffer(segment.buf, np.float32, 3).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(RegionError, match="too small"):
        region.view(900, 256, F32, (1, 64), what="input 'x'")
    with pytest.raises(RegionError, match="the request gives 255"):
        region.view(0, 255, F32, (1, 64), what="input 'x'")
    del first
    registry.close()
    assert registry.mapped == 0  # the views it kept went with the unregister


def test_the_generation_changes_on_register_and_unregister_only(
        segment: shared_memory.SharedMemory) -> None:
    registry = RegionRegistry()
    start = registry.generation
    region = registry.register("r", segment.name, 0, 1024)
    assert registry.generation == start + 1
    registry.status()
    registry.unregister("not-there")  # nothing unregistered: nothing changed
    with pytest.raises(RegionError):
        registry.register("r", segment.name, 0, 1024)  # refused: nothing changed
    assert registry.generation == start + 1
    assert registry.hold([region], start) is False and region.users == 0
    assert registry.hold([region], registry.generation) is True and region.users == 1
    registry.unregister("r")
    assert registry.generation == start + 2
    assert registry.mapped == 1  # held: mapped until released
    registry.release([region])
    assert region.users == 0 and registry.mapped == 0


def test_a_view_made_while_its_region_is_unregistered_is_not_kept(
        segment: shared_memory.SharedMemory) -> None:
    registry = RegionRegistry()
    with registry.using(registry.register("r", segment.name, 0, 1024).name) as region:
        registry.unregister("r")
        view = region.view(0, 256, F32, (1, 64), what="input 'x'")
        assert view.shape == (1, 64) and registry.mapped == 1
        del view
    assert registry.mapped == 0
