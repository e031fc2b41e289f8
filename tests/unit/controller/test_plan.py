"""Deterministic cohort planning and the step <-> rollout_seq mapping."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.controller.errors import PlanError
from agent.controller.plan import (
    SEQ_STRIDE,
    build_command,
    command_seq,
    plan_rollout,
    rollback_commands,
    step_of_seq,
)
from agent.controller.registry import FleetRegistry
from agent.controller.spec import RolloutSpec, parse_spec
from agent.wire.commands import PromoteCommand, SetWeightsCommand, StageCommand
from agent.wire.messages import ProfileInfo, Register

SHA = "ab" * 32
TARGETS = ("rasp4b", "jetson_nano", "linux_x86_64")


def register(thing: str, target: str, groups: list[str]) -> Register:
    profile = ProfileInfo(board="b", board_family="generic", neo_target=target, arch="x86_64",
                          reported_arch="x86_64", emulated=True, os_bits=64, cpu_count=4,
                          mem_total_bytes=2**31, mem_available_bytes=2**30)
    return Register(thing=thing, seq=1, sent_at=0, groups=groups, profile=profile,
                    agent_version="0.1.0", boot_id="c" * 32, models={"blue": "digits-v1"})


def fleet(layout: dict[str, dict[str, int]]) -> FleetRegistry:
    """layout: group -> target -> device count."""
    registry = FleetRegistry(clock=lambda: 0.0)
    for group, targets in layout.items():
        for target, count in targets.items():
            for i in range(count):
                registry.observe(register(f"{group}-{target}-{i}", target, [group]), now=0.0)
    return registry


def spec(strategy: dict[str, Any], **extra: Any) -> RolloutSpec:
    data: dict[str, Any] = {
        "name": "r-digits-v2", "model": "digits-v2",
        "packages": {t: {"url": f"https://example.com/{t}.tgz", "sha256": SHA, "version": 2}
                     for t in TARGETS},
        "groups": ["kitchen", "garage"], "strategy": strategy,
        "guardrails": {"min_samples": 10}}
    data.update(extra)
    return parse_spec(data)


LAYOUT = {"kitchen": {"rasp4b": 20, "jetson_nano": 3, "linux_x86_64": 1},
          "garage": {"rasp4b": 6, "jetson_nano": 1}}


def test_canary_percent_takes_ceil_of_each_group_spread_over_classes() -> None:
    registry = fleet(LAYOUT)
    steps = plan_rollout(spec({"type": "canary", "percent": 10, "bake_s": 60}),
                         registry.devices())
    assert [s.name for s in steps] == ["canary", "all"]
    canary = set(steps[0].things)
    kitchen = [d.thing for d in registry.devices_in(["kitchen"])]
    garage = [d.thing for d in registry.devices_in(["garage"])]
    assert len(canary & set(kitchen)) == math.ceil(0.1 * 24) == 3
    assert len(canary & set(garage)) == 1
    kitchen_classes = {steps[0].hardware_class[t] for t in canary & set(kitchen)}
    assert kitchen_classes == {"rasp4b", "jetson_nano", "linux_x86_64"}
    assert set(steps[1].things) == set(kitchen + garage) - canary
    assert steps[0].watch_s == 60 and steps[1].watch_s == 60
    # deterministic: same inputs, same plan; another rollout name, another choice
    again = plan_rollout(spec({"type": "canary", "percent": 10, "bake_s": 60}),
                         list(reversed(registry.devices())))
    assert again == steps
    other = plan_rollout(spec({"type": "canary", "percent": 10, "bake_s": 60},
                              name="r-other"), registry.devices())
    assert {t for t in other[0].things if "rasp4b" in t} != \
        {t for t in canary if "rasp4b" in t}


def test_canary_at_least_one_per_group() -> None:
    steps = plan_rollout(spec({"type": "canary", "percent": 0.5, "bake_s": 1}),
                         fleet(LAYOUT).devices())
    assert len(steps[0].things) == 2  # one per group


def test_canary_group_then_linear() -> None:
    registry = fleet({"kitchen": {"rasp4b": 10}, "garage": {"jetson_nano": 2}})
    steps = plan_rollout(spec({"type": "canary", "group": "garage", "bake_s": 600,
                               "then": "linear", "linear_steps": 3, "step_interval_s": 30}),
                         registry.devices())
    assert [s.name for s in steps] == ["canary", "linear-1/3", "linear-2/3", "linear-3/3"]
    assert set(steps[0].things) == {"garage-jetson_nano-0", "garage-jetson_nano-1"}
    assert [len(s.things) for s in steps[1:]] == [4, 3, 3]
    assert [s.watch_s for s in steps] == [600, 30, 30, 30]
    assert len(steps[-1].cumulative) == 12


@pytest.mark.parametrize(("devices", "k", "sizes"), [
    (10, 3, [4, 3, 3]), (9, 3, [3, 3, 3]), (7, 4, [2, 2, 2, 1]), (2, 5, [1, 1]), (1, 1, [1])])
def test_linear_steps_are_equal_within_one(devices: int, k: int, sizes: list[int]) -> None:
    registry = fleet({"kitchen": {"rasp4b": devices}})
    steps = plan_rollout(spec({"type": "linear", "steps": k, "step_interval_s": 5},
                              groups=["kitchen"]), registry.devices())
    assert [len(s.things) for s in steps] == sizes
    assert [s.name for s in steps] == [f"linear-{i + 1}/{len(sizes)}" for i in range(len(sizes))]
    seen = [t for s in steps for t in s.things]
    assert sorted(seen) == sorted(d.thing for d in registry.devices())  # each exactly once


def test_linear_spreads_classes_over_steps() -> None:
    registry = fleet({"kitchen": {"rasp4b": 6, "jetson_nano": 3}})
    steps = plan_rollout(spec({"type": "linear", "steps": 3, "step_interval_s": 5},
                              groups=["kitchen"]), registry.devices())
    for step in steps:
        assert sorted(step.hardware_class.values()) == ["jetson_nano", "rasp4b", "rasp4b"]


def test_all_at_once_with_shadow_and_weights() -> None:
    registry = fleet({"kitchen": {"rasp4b": 2, "jetson_nano": 1}})
    steps = plan_rollout(spec({"type": "all_at_once", "watch_s": 120}, groups=["kitchen"],
                              shadow={"duration_s": 900, "sample_rate": 0.25},
                              weights=[10, 50, 100]), registry.devices(), rollout_id="r-1")
    assert [s.name for s in steps] == ["shadow", "all@10", "all@50", "all@100"]
    assert [s.mode for s in steps] == ["shadow", "weighted", "weighted", "serve"]
    assert [s.green_weight for s in steps] == [None, 10, 50, 100]
    shadow, first, _, last = steps
    assert shadow.switched == () and shadow.cumulative == () and shadow.watch_s == 900
    assert len(shadow.things) == 3 and len(first.switched) == 3
    thing = "kitchen-jetson_nano-0"
    assert [c.action for c in shadow.commands_for(thing)] == ["stage", "shadow"]
    assert [c.action for c in first.commands_for(thing)] == ["set_weights"]  # staged already
    assert dict(first.commands_for(thing)[0].args) == {"blue": 90, "green": 10}
    assert [c.action for c in last.commands_for(thing)] == ["promote"]
    stage = shadow.commands_for(thing)[0]
    assert stage.args["url"] == "https://example.com/jetson_nano.tgz"
    for step in steps:
        for command in step.commands:
            assert command.rollout_id == "r-1"
            assert step_of_seq(command.rollout_seq) == step.index
            assert command.rollout_seq in step.seq_range


def test_switch_without_weights_stages_and_promotes() -> None:
    steps = plan_rollout(spec({"type": "all_at_once", "watch_s": 1}, groups=["kitchen"]),
                         fleet({"kitchen": {"rasp4b": 1}}).devices())
    (step,) = steps
    assert step.name == "all" and step.mode == "serve"
    stage, promote = step.commands
    assert (stage.action, stage.rollout_seq) == ("stage", SEQ_STRIDE)
    assert (promote.action, promote.rollout_seq) == ("promote", SEQ_STRIDE + 1)
    command = build_command(stage, issued_at=5, command_id="a" * 32)
    assert isinstance(command, StageCommand) and command.args.version == "digits-v2"
    assert command.target.name == "kitchen-rasp4b-0" and command.rollout_seq == SEQ_STRIDE
    retried = build_command(promote, issued_at=5, attempt=2)
    assert isinstance(retried, PromoteCommand)
    assert retried.rollout_seq == command_seq(0, 1, 2) > promote.rollout_seq
    assert step_of_seq(retried.rollout_seq) == 0


def test_seq_mapping_and_rollback() -> None:
    assert step_of_seq(0) == -1 and step_of_seq(SEQ_STRIDE - 1) == -1
    assert step_of_seq(command_seq(3, 9, 99)) == 3
    with pytest.raises(ValueError):
        command_seq(0, 10)
    steps = plan_rollout(spec({"type": "linear", "steps": 2, "step_interval_s": 5},
                              groups=["kitchen"], weights=[50, 100]),
                         fleet({"kitchen": {"rasp4b": 2}}).devices())
    assert isinstance(build_command(steps[0].commands[1], issued_at=0), SetWeightsCommand)
    rollback = rollback_commands(steps, ["kitchen-rasp4b-1", "kitchen-rasp4b-0"])
    assert [c.thing for c in rollback] == ["kitchen-rasp4b-0", "kitchen-rasp4b-1"]
    assert all(step_of_seq(c.rollout_seq) == len(steps) for c in rollback)
    highest = max(c.rollout_seq for s in steps for c in s.commands)
    assert all(c.rollout_seq > highest for c in rollback)


def test_plan_errors() -> None:
    with pytest.raises(PlanError):
        plan_rollout(spec({"type": "linear", "steps": 2, "step_interval_s": 5}), [])
    with pytest.raises(PlanError, match="canary group"):
        plan_rollout(spec({"type": "canary", "group": "garage", "bake_s": 1}),
                     fleet({"kitchen": {"rasp4b": 2}}).devices())


def test_a_device_running_onnx_gets_the_onnx_package() -> None:
    """A device that registers with ``backend: onnx`` takes ``packages.onnx``, whatever its
    Neo target; one that says nothing (an older agent) or ``dlr`` takes its target's."""
    from agent.controller.errors import SpecError
    from agent.wire.messages import Heartbeat

    registry = FleetRegistry(clock=lambda: 0.0)
    old = register("old-1", "rasp4b", ["lab"])
    registry.observe(old, now=0.0)
    registry.observe(old.model_copy(update={"thing": "onnx-1", "backend": "onnx"}), now=0.0)
    registry.observe(old.model_copy(update={"thing": "dlr-1", "backend": "dlr"}), now=0.0)
    assert {d.thing: d.package_key for d in registry.devices()} == {
        "dlr-1": "rasp4b", "old-1": "rasp4b", "onnx-1": "onnx"}
    packages = {key: {"url": f"https://example.com/{key}.tgz", "sha256": SHA, "version": 2}
                for key in ("rasp4b", "onnx")}
    plan = plan_rollout(spec({"type": "all_at_once", "watch_s": 1}, groups=["lab"],
                             packages=packages), registry.devices())
    urls = {c.thing: c.args["url"] for c in plan[0].commands if c.action == "stage"}
    assert urls == {"old-1": "https://example.com/rasp4b.tgz",
                    "dlr-1": "https://example.com/rasp4b.tgz",
                    "onnx-1": "https://example.com/onnx.tgz"}
    # Without an onnx package the ONNX device is named, in planning and in spec checks.
    only_dlr = spec({"type": "all_at_once", "watch_s": 1}, groups=["lab"],
                    packages={"rasp4b": packages["rasp4b"]})
    with pytest.raises(PlanError, match=r"no package for backend onnx \(onnx-1\)"):
        plan_rollout(only_dlr, registry.devices())
    with pytest.raises(SpecError, match=r"no package for backend onnx \(1 device\(s\), e.g. "
                                        r"onnx-1\)"):
        only_dlr.validate_against(registry)
    # A heartbeat carries the backend too, and a later one without it changes nothing.
    beat = Heartbeat(thing="onnx-1", seq=2, sent_at=0, uptime_s=1.0, boot_id="c" * 32,
                     models={"blue": "digits-v1"}, backend="dlr")
    registry.observe(beat, now=1.0)
    registry.observe(beat.model_copy(update={"backend": None, "seq": 3}), now=2.0)
    device = registry.get("onnx-1")
    assert device is not None and (device.backend, device.package_key) == ("dlr", "rasp4b")
