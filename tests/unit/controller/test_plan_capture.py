"""A rollout's ``shadow.capture``: the shadowed devices get a signed ``capture`` command
with those rules when the shadow phase starts; without it, no capture command."""

from __future__ import annotations

from typing import Any

import pytest

from agent.controller.errors import SpecError
from agent.controller.plan import build_command, plan_rollout
from agent.controller.registry import FleetRegistry
from agent.controller.spec import RolloutSpec, parse_spec
from agent.wire.codec import decode, encode
from agent.wire.commands import CaptureCommand, Command
from agent.wire.keys import generate_keypair
from agent.wire.messages import ProfileInfo, Register
from agent.wire.signing import Signer

SHA = "ab" * 32


def _registry(count: int) -> FleetRegistry:
    registry = FleetRegistry(clock=lambda: 0.0)
    profile = ProfileInfo(board="b", board_family="generic", neo_target="linux_x86_64",
                          arch="x86_64", reported_arch="x86_64", emulated=True, os_bits=64,
                          cpu_count=4, mem_total_bytes=2**31, mem_available_bytes=2**30)
    for i in range(count):
        registry.observe(Register(thing=f"dev-{i}", seq=1, sent_at=0, groups=["lab"],
                                  profile=profile, agent_version="0.1.0", boot_id="c" * 32,
                                  models={"blue": "digits-v1"}), now=0.0)
    return registry


def _spec(**shadow: Any) -> RolloutSpec:
    return parse_spec({
        "name": "r-cap", "model": "digits-v2", "groups": ["lab"],
        "packages": {"linux_x86_64": {"url": "https://example.com/p.tgz", "sha256": SHA,
                                      "version": 2}},
        "strategy": {"type": "canary", "percent": 50, "bake_s": 1},
        "shadow": {"duration_s": 5, "sample_rate": 1.0, **shadow}})


def test_the_shadow_step_sends_the_capture_rules_to_its_devices() -> None:
    steps = plan_rollout(_spec(capture={"sample_rate": 0, "disagreement": True,
                                        "drift_above": 0.2}), _registry(4).devices())
    shadow = steps[0]
    captures = [c for c in shadow.commands if c.action == "capture"]
    assert sorted(c.thing for c in captures) == sorted(shadow.things) and len(captures) == 2
    assert all(c.ordinal == 2 for c in captures)
    assert not any(c.action == "capture" for s in steps[1:] for c in s.commands)
    signer = Signer(private_key=generate_keypair("ctl").private_key(), key_id="ctl")
    wire = signer.sign(build_command(captures[0], issued_at=1))
    command = decode(encode(wire), expect=Command)
    assert isinstance(command, CaptureCommand) and command.args.enabled
    assert command.args.rules.sample_rate == 0.0 and command.args.rules.drift_above == 0.2
    assert command.rollout_seq == captures[0].rollout_seq


def test_no_capture_block_no_capture_command_and_bad_rules_are_named() -> None:
    steps = plan_rollout(_spec(), _registry(2).devices())
    assert not any(c.action == "capture" for s in steps for c in s.commands)
    with pytest.raises(SpecError, match="capture"):
        _spec(capture={"sample_rate": 3})
    with pytest.raises(SpecError, match="capture"):
        _spec(capture={"keep": "everything"})
