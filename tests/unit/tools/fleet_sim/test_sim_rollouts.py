"""The simulated device answers confirm, announce, rollout-scoped rollbacks and stages
during a trial exactly as the real agent does (same outcomes, same ack ``data`` codes),
and its heartbeats carry groups and profile."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from agent.tools.fleet_sim.device import SimDevice
from agent.tools.fleet_sim.lanes import SimContext
from agent.tools.fleet_sim.model import BucketModel, ModelBehaviour, resolve_profiles
from agent.tools.fleet_sim.simulate import fresh_keys
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    AnnounceCommand,
    Command,
    ConfirmCommand,
    PromoteCommand,
    RollbackCommand,
    StageArgs,
    StageCommand,
    Target,
)
from agent.wire.messages import Ack, Heartbeat, Register
from agent.wire.signing import Signer

TRIAL_S = 60.0


class Sim:
    def __init__(self) -> None:
        self.signer, trust = fresh_keys("controller-1")
        ctx = SimContext(rng=np.random.default_rng(3), ids=random.Random(3),
                         buckets=BucketModel(), blue=ModelBehaviour(),
                         green={"digits-v2": ModelBehaviour(), "digits-v3": ModelBehaviour()},
                         breach=None, blue_accuracy=0.98, inference_rate_hz=100.0,
                         trial_s=TRIAL_S, trust=trust, agent_version="0+sim")
        self.device = SimDevice(thing="dev-1", groups=("canary",),
                                profile=resolve_profiles(("rasp4b",))[0], speed=1.0,
                                connection=0, blue_label="digits-v1", ctx=ctx, now=0.0)
        self.seqs: dict[str, Iterator[int]] = {}
        self.now = 0.0

    def send(self, cls: type[Command], rollout: str, **fields: Any) -> tuple[Ack, list[Any]]:
        self.now += 1.0
        seq = next(self.seqs.setdefault(rollout, itertools.count(1)))
        command = cls(target=fields.pop("target", Target(kind="thing", name="dev-1")),
                      rollout_id=rollout, rollout_seq=seq, issued_at=1, **fields)
        out = self.device.receive(encode(Signer.sign(self.signer, command)), "t", self.now)
        messages = [decode(payload) for _channel, payload in out]
        ack = messages[-1]
        assert isinstance(ack, Ack)
        return ack, messages[:-1]

    def stage(self, rollout: str, version: str = "digits-v2") -> Ack:
        return self.send(StageCommand, rollout, args=StageArgs(
            url="https://example.com/p.tar.gz", sha256="a" * 64, version=version,
            package_version=2))[0]


@pytest.fixture
def sim() -> Sim:
    return Sim()


def test_stage_during_a_trial_confirm_and_a_foreign_rollback(sim: Sim) -> None:
    staged = sim.stage("r-a")
    assert staged.outcome == "ok" and staged.data == {"model": "digits-v2", "package_version": 2}
    assert sim.send(PromoteCommand, "r-a")[0].data == {"model": "digits-v2"}
    refused = sim.stage("r-b", "digits-v3")
    assert refused.outcome == "rejected" and refused.data == {
        "code": "on_trial", "trial_rollout_id": "r-a", "model": "digits-v2"}
    assert refused.reason == ("digits-v2 promoted by rollout r-a is on trial: rollout r-a "
                              "must confirm or roll it back first")
    other = sim.send(ConfirmCommand, "r-b")[0]
    assert other.outcome == "rejected" and other.data["code"] == "other_rollout"
    noop = sim.send(RollbackCommand, "r-b")[0]
    assert noop.outcome == "ok" and noop.data == {"code": "nothing_to_roll_back",
                                                  "model": "digits-v2"}
    assert sim.device.models() == {"blue": "digits-v2"} and sim.device.trial_started is not None
    confirmed = sim.send(ConfirmCommand, "r-a")[0]
    assert (confirmed.outcome, confirmed.reason) == ("ok", "digits-v2 confirmed")
    assert sim.device.trial_started is None
    assert sim.send(ConfirmCommand, "r-a")[0].reason == "digits-v2 already confirmed"
    assert sim.send(ConfirmCommand, "r-b")[0].data["code"] == "nothing_to_confirm"
    # The exact case: r-b's late rollback leaves r-a's model serving...
    assert sim.send(RollbackCommand, "r-b")[0].data["code"] == "nothing_to_roll_back"
    assert sim.device.models() == {"blue": "digits-v2"}
    # ...and r-a's own rollback, after a restart, goes back to the model before it.
    sim.device.reboot(sim.now)
    back = sim.send(RollbackCommand, "r-a")[0]
    assert (back.outcome, back.data) == ("ok", {"model": "digits-v1"})
    assert sim.device.models() == {"blue": "digits-v1"}


def test_rollback_of_its_own_trial_or_candidate(sim: Sim) -> None:
    sim.stage("r-a")
    assert sim.send(RollbackCommand, "r-b")[0].data["code"] == "nothing_to_roll_back"
    assert sim.device.models() == {"blue": "digits-v1", "green": "digits-v2"}
    assert sim.send(RollbackCommand, "r-a")[0].reason == "digits-v2 rolled back; digits-v1 serves"
    sim.stage("r-c")
    sim.send(PromoteCommand, "r-c")
    undone = sim.send(RollbackCommand, "r-c")[0]
    assert undone.outcome == "ok" and sim.device.models() == {"blue": "digits-v1"}
    assert sim.device.trial_started is None
    assert sim.send(RollbackCommand, "r-c")[0].data["code"] == "nothing_to_roll_back"


def test_announce_sends_a_register_and_heartbeats_carry_groups_and_profile(sim: Sim) -> None:
    ack, before = sim.send(AnnounceCommand, "announce",
                           target=Target(kind="group", name="canary"))
    assert (ack.outcome, ack.reason) == ("ok", "register sent")
    (register,) = before
    assert isinstance(register, Register) and register.groups == ["canary"]
    heartbeat = decode(sim.device.heartbeat(5.0)[1], expect=Heartbeat)
    assert heartbeat.groups == ["canary"] and heartbeat.profile == register.profile


def test_a_replayed_command_is_re_acked_with_its_data(sim: Sim) -> None:
    sim.stage("r-a")
    sim.send(PromoteCommand, "r-a")
    command = StageCommand(target=Target(kind="thing", name="dev-1"), rollout_id="r-b",
                           rollout_seq=1, issued_at=1, args=StageArgs(
                               url="https://example.com/p.tar.gz", sha256="a" * 64,
                               version="digits-v3"))
    raw = encode(sim.signer.sign(command))
    first = decode(sim.device.receive(raw, "t", 10.0)[-1][1], expect=Ack)
    again = decode(sim.device.receive(raw, "t", 11.0)[-1][1], expect=Ack)
    assert first.data["code"] == again.data["code"] == "on_trial"
