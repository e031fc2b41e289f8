"""The simulated fleet: protocol-valid messages from many devices over a real mosquitto,
commands verified and answered like a real agent, offline devices silent."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_brokers import running_mosquitto
from waits import wait_for

from agent.tools.fleet_sim.device import SimDevice
from agent.tools.fleet_sim.lanes import SimContext
from agent.tools.fleet_sim.model import BucketModel, ModelBehaviour, resolve_profiles
from agent.tools.fleet_sim.simulate import SimulatedFleet, assign_groups, fresh_keys
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    Command,
    PromoteCommand,
    ShadowArgs,
    ShadowCommand,
    StageArgs,
    StageCommand,
    StatusCommand,
    Target,
)
from agent.wire.messages import Ack, Event, Metrics, Register, State
from agent.wire.signing import Signer

DEVICES = 500
GREEN = {"digits-v2": ModelBehaviour(median_ms=2.0),
         "digits-v1-slow": ModelBehaviour(median_ms=25.0, agreement=0.9)}


def _stage(target: Target, seq: int, version: str, rollout: str = "r1") -> StageCommand:
    return StageCommand(target=target, rollout_id=rollout, rollout_seq=seq, issued_at=1,
                        args=StageArgs(url="https://example.com/p.tar.gz", sha256="a" * 64,
                                       version=version))


def _outside_canary(fleet: SimulatedFleet, index: int) -> str:
    """A device the group test leaves alone."""
    return [t for t in fleet.things if fleet.view(t).groups == ("fleet",)][index]


def _thing(name: str) -> Target:
    return Target(kind="thing", name=name)


class Cloud:
    """A paho client on the cloud side: records every up message, publishes commands."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cloud",
                                   protocol=paho.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert self._ready.wait(10)
        time.sleep(0.2)  # the SUBACK

    def _on_connect(self, client: Any, *_args: Any) -> None:
        client.subscribe("edge/+/+", qos=1)
        self._ready.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if not message.topic.endswith("/commands"):
            with self._lock:
                self.messages.append((message.topic, bytes(message.payload)))

    def decoded(self) -> list[Any]:
        with self._lock:
            raw = list(self.messages)
        return [decode(payload) for _topic, payload in raw]

    def of(self, cls: type[Any], thing: str | None = None) -> list[Any]:
        return [m for m in self.decoded() if isinstance(m, cls)
                and (thing is None or m.thing == thing)]

    def send(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def command(self, signer: Signer | None, command: Command) -> Command:
        sent = signer.sign(command) if signer else command
        name = command.target.name
        self.send(f"edge/{name}/commands" if command.target.kind == "thing"
                  else f"edge/groups/{name}/commands", encode(sent))
        return sent

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    signer, trust = fresh_keys("controller-1")
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        cloud = Cloud(broker.host, broker.port)
        fleet = SimulatedFleet(
            broker_host=broker.host, broker_port=broker.port, devices=DEVICES,
            groups={"canary": 0.1, "fleet": 0.9}, trust=trust, report_interval_s=1.0,
            start_spread_s=0.5, connections=4, green=GREEN, seed=7)
        fleet.start()
        try:
            yield fleet, cloud, signer
        finally:
            fleet.stop()
            cloud.close()


def test_registers_and_metrics_decode_and_validate(setup: tuple[Any, ...]) -> None:
    fleet, cloud, _ = setup
    wait_for(lambda: len({m.thing for m in cloud.of(Metrics)}) == DEVICES, 10)
    registers = cloud.of(Register)
    assert {r.thing for r in registers} == set(fleet.things)
    assert {r.profile.neo_target for r in registers} == {"rasp4b", "jetson_nano",
                                                         "linux_x86_64"}
    assert sum(r.groups == ["canary"] for r in registers) == DEVICES // 10
    seqs: dict[str, list[int]] = defaultdict(list)
    for message in cloud.decoded():
        seqs[message.thing].append(message.seq)
    assert all(s == sorted(s) and len(set(s)) == len(s) for s in seqs.values())
    report = cloud.of(Metrics)[-1]
    blue = report.variants["blue"]
    assert blue.model_version == "digits-v1"
    assert blue.inferences_total == sum(blue.buckets.counts) > 0
    assert blue.buckets.version == "log10x10-v1"
    assert 500 < (blue.p50_us or 0) < 10_000  # lognormal around 2 ms, scaled per profile
    assert fleet.stats().reports_sent >= DEVICES


def test_signed_commands_are_acked_and_reflected(setup: tuple[Any, ...]) -> None:
    fleet, cloud, signer = setup
    thing = _outside_canary(fleet, 3)
    stage = cloud.command(signer, _stage(_thing(thing), 1, "digits-v1-slow"))
    shadow = cloud.command(signer, ShadowCommand(target=_thing(thing), rollout_id="r1",
                                                 rollout_seq=2, issued_at=1,
                                                 args=ShadowArgs(sample_rate=0.5)))
    acks = wait_for(lambda: {a.command_id: a for a in cloud.of(Ack, thing)}
                    if len(cloud.of(Ack, thing)) >= 2 else None, 5)
    assert acks[stage.command_id].outcome == "ok"
    assert acks[stage.command_id].reason == "digits-v1-slow staged"
    assert acks[shadow.command_id].outcome == "ok"

    def slow_green() -> Any:
        for m in cloud.of(Metrics, thing):
            green = m.variants.get("green")
            # A window of a handful of samples can sit anywhere in the distribution:
            # judge the slow label on a report with enough of them.
            if green is not None and green.rollout_seq == 2 and green.inferences >= 5:
                return m
        return None

    report = wait_for(slow_green, 10)
    green, blue = report.variants["green"], report.variants["blue"]
    assert green.model_version == "digits-v1-slow" and green.rollout_id == "r1"
    # 25 ms against blue's 2 ms at the reference speed (each profile scales both alike).
    assert (green.p50_us or 0) > 3 * (blue.p50_us or float("inf"))

    status = cloud.command(signer, StatusCommand(target=_thing(thing), rollout_id="r1",
                                                 rollout_seq=3, issued_at=1))
    state = wait_for(lambda: [s for s in cloud.of(State, thing)
                              if s.in_reply_to == status.command_id], 5)[0]
    assert state.mode == "shadow" and state.models["green"] == "digits-v1-slow"
    assert state.trial is not None and state.trial.kind == "shadow"

    cloud.command(signer, PromoteCommand(target=_thing(thing), rollout_id="r1",
                                         rollout_seq=4, issued_at=1))
    promoted = wait_for(lambda: [m for m in cloud.of(Metrics, thing)
                                 if m.variants["blue"].model_version == "digits-v1-slow"], 5)
    assert "green" not in promoted[-1].variants
    assert fleet.view(thing).state["models"] == {"blue": "digits-v1-slow"}


def test_group_command_reaches_every_member_once(setup: tuple[Any, ...]) -> None:
    fleet, cloud, signer = setup
    members = {t for t in fleet.things if fleet.view(t).groups == ("canary",)}
    sent = cloud.command(signer, _stage(Target(kind="group", name="canary"), 1, "digits-v2",
                                        rollout="r-group"))
    wait_for(lambda: len([a for a in cloud.of(Ack) if a.command_id == sent.command_id])
             >= len(members), 10)
    time.sleep(0.3)
    acks = [a for a in cloud.of(Ack) if a.command_id == sent.command_id]
    assert sorted(a.thing for a in acks) == sorted(members)  # each member once, no other
    assert all(a.outcome == "ok" for a in acks)


def test_forged_and_unsigned_commands_are_rejected(setup: tuple[Any, ...]) -> None:
    fleet, cloud, signer = setup
    thing = _outside_canary(fleet, 5)
    signed = signer.sign(_stage(_thing(thing), 1, "digits-v2", rollout="r-forged"))
    forged = signed.model_copy(update={"args": StageArgs(
        url="https://evil.example.com/p.tar.gz", sha256="b" * 64, version="digits-v2")})
    cloud.send(f"edge/{thing}/commands", encode(forged))
    cloud.command(None, _stage(_thing(thing), 2, "digits-v2", rollout="r-forged"))
    cloud.send(f"edge/{thing}/commands", b"{not json")
    events = wait_for(lambda: e if len(e := cloud.of(Event, thing)) >= 3 else None, 5)
    assert all(e.kind == "rejected_message" for e in events)
    assert sorted(e.data["code"] for e in events) == ["bad_signature", "malformed",
                                                      "missing_signature"]
    assert not cloud.of(Ack, thing)
    assert "green" not in fleet.view(thing).state["models"]


def test_offline_device_is_silent_then_answers(setup: tuple[Any, ...]) -> None:
    fleet, cloud, signer = setup
    thing = _outside_canary(fleet, 8)
    fleet.set_online(thing, False)
    time.sleep(0.3)  # what was published before is delivered
    before = len([t for t, _ in cloud.messages if t.startswith(f"edge/{thing}/")])
    status = cloud.command(signer, StatusCommand(target=_thing(thing), rollout_id="r-off",
                                                 rollout_seq=1, issued_at=1))
    time.sleep(2.5)  # two report intervals
    assert len([t for t, _ in cloud.messages if t.startswith(f"edge/{thing}/")]) == before
    boot_id = fleet.view(thing).boot_id

    fleet.set_online(thing, True)
    wait_for(lambda: len(cloud.of(Register, thing)) == 2, 5)
    # The controller re-sends its latest decision (same command, new transmission id).
    resent = signer.sign(status.model_copy(update={"id": "f" * 32}))
    cloud.send(f"edge/{thing}/commands", encode(resent))
    state = wait_for(lambda: [s for s in cloud.of(State, thing)
                              if s.in_reply_to == status.command_id], 5)
    assert len(state) == 1
    assert fleet.view(thing).boot_id == boot_id  # an outage, not a reboot
    assert fleet.stats().commands_dropped_offline >= 1


# ---- without a broker ------------------------------------------------------------------

def test_group_shares_are_exact() -> None:
    things = [f"t{i}" for i in range(1001)]
    groups = assign_groups(things, {"canary": 0.05, "fleet": 0.95}, random.Random(1))
    assert sum(g == ("canary",) for g in groups) == 50
    assert sum(g == ("fleet",) for g in groups) == 951
    assert assign_groups(things[:2], ["a", "b"], random.Random(1)) == [("a", "b")] * 2


def test_device_messages_validate_without_broker(tmp_path: Path) -> None:
    signer, trust = fresh_keys("controller-1")
    ctx = SimContext(rng=np.random.default_rng(1), ids=random.Random(1),
                     buckets=BucketModel(), blue=ModelBehaviour(), green=GREEN, breach=None,
                     blue_accuracy=0.98, inference_rate_hz=100.0, trial_s=600.0,
                     trust=trust, agent_version="0+sim")
    device = SimDevice(thing="dev-1", groups=("canary",),
                       profile=resolve_profiles(("rasp4b",))[0], speed=1.0, connection=0,
                       blue_label="digits-v1", ctx=ctx, now=0.0)
    assert isinstance(decode(device.register()[1]), Register)
    out = device.receive(encode(signer.sign(_stage(_thing("dev-1"), 1, "digits-v2"))),
                         "edge/dev-1/commands", 1.0)
    assert isinstance(decode(out[-1][1]), Ack)
    replay = device.receive(encode(signer.sign(_stage(_thing("dev-1"), 1, "digits-v2"))),
                            "edge/dev-1/commands", 1.5)
    assert json.loads(replay[0][1])["data"]["code"] == "stale"
    first = decode(device.metrics(10.0)[1], expect=Metrics)
    second = decode(device.metrics(20.0)[1], expect=Metrics)
    assert first.variants["green"].model_version == "digits-v2"
    assert second.variants["blue"].inferences_total > first.variants["blue"].inferences_total
    assert second.seq > first.seq


def test_breach_serves_on_cohort_until_rolled_back() -> None:
    from agent.tools.fleet_sim.model import BreachSpec
    from agent.wire.commands import RollbackCommand

    signer, trust = fresh_keys("controller-1")
    ctx = SimContext(rng=np.random.default_rng(2), ids=random.Random(2),
                     buckets=BucketModel(), blue=ModelBehaviour(), green=GREEN,
                     breach=BreachSpec(label="digits-v2", cohort="canary"),
                     blue_accuracy=0.98, inference_rate_hz=100.0, trial_s=600.0,
                     trust=trust, agent_version="0+sim")
    devices = [SimDevice(thing=f"dev-{g}", groups=(g,), profile=resolve_profiles(
        ("jetson_nano",))[0], speed=1.0, connection=0, blue_label="digits-v1", ctx=ctx,
        now=0.0) for g in ("canary", "fleet")]
    for d in devices:
        d.receive(encode(signer.sign(_stage(_thing(d.thing), 1, "digits-v2"))), "t", 0.0)
        d.receive(encode(signer.sign(ShadowCommand(
            target=_thing(d.thing), rollout_id="r1", rollout_seq=2, issued_at=1,
            args=ShadowArgs(sample_rate=1.0)))), "t", 0.0)
    canary, other = (decode(d.metrics(10.0)[1], expect=Metrics).variants["green"]
                     for d in devices)
    assert (canary.p50_us or 0) > 20_000 and canary.errors > 0  # the injected breach
    assert (other.p50_us or 0) < 5_000 and other.errors == 0
    devices[0].receive(encode(signer.sign(RollbackCommand(
        target=_thing("dev-canary"), rollout_id="r1", rollout_seq=3, issued_at=1))), "t", 12.0)
    assert devices[0].breach_started_at == 0.0
    assert devices[0].breach_cleared_at == 12.0
    assert devices[1].breach_started_at is None
