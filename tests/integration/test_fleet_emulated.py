"""The fleet controller on an emulated fleet of real agents over a real broker: 6 devices in
2 groups on 2 hardware profiles. A canary of v2 completes; a rollout of `slow` is rolled back
fleet-wide by latency, and a canary device that was offline during the rollback is rolled back
when it returns; `wrong` with a shadow phase is stopped before any device serves it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from cloud import CloudSubscriber

from agent.controller.controller import FleetController
from agent.controller.spec import parse_spec
from agent.controller.state import ControllerState
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import Signer

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
DEVICES = [(f"fleet-{i}", "kitchen" if i <= 3 else "garage",
            "rpi4_64" if i % 2 else "jetson_nano_r32") for i in range(1, 7)]
TARGETS = {"rpi4_64": "rasp4b", "jetson_nano_r32": "jetson_nano"}


class Fleet:
    def __init__(self, tmp: Path, models: Path) -> None:
        self.tmp, self.models = tmp, models
        self.broker = MosquittoBroker(workdir=tmp / "broker")
        self.broker.start()
        keys = keys_generate(tmp / "keys", "ctl-1")
        self.key = keys.public
        self.signer = Signer.from_file(keys.private, key_id="ctl-1")
        (tmp / "agent.yaml").write_text("trialSeconds: 1\nguardrails:\n  minSamples: 40\n"
                                        f"packageDirs: [{tmp / 'packages'}]\n")
        self.agents = {thing: self._agent(thing, group, board) for thing, group, board in DEVICES}
        self.cloud = CloudSubscriber(host="127.0.0.1", port=self.broker.port,
                                     topic="edge/+/+").start()
        self.controller = FleetController(
            transport=MqttTransport(config=MqttConfig(host="127.0.0.1", port=self.broker.port,
                                                      client_id="controller")),
            signer=self.signer, state=ControllerState(path=tmp / "controller.db"))
        self.controller.start()
        for agent in self.agents.values():
            agent.start()
        deadline = time.monotonic() + 60
        while len(self.controller.registry.devices()) < len(DEVICES):
            assert time.monotonic() < deadline, "devices did not register"
            time.sleep(0.1)

    def _agent(self, thing: str, group: str, board: str) -> AgentProcess:
        return AgentProcess(thing=thing, model=self.models / "digits-v1",
                            state_dir=self.tmp / thing, broker_port=self.broker.port,
                            log_path=self.tmp / f"{thing}.log", rate=100, metrics_interval=0.5,
                            heartbeat_interval=1.0, extra=[
                                "--board", board, "--groups", group,
                                "--trusted-key", f"ctl-1={self.key}",
                                "--config", str(self.tmp / "agent.yaml")])

    def packages(self, name: str, version: int, reference: str | None = None) -> dict[str, Any]:
        out = {}
        for target in ("rasp4b", "jetson_nano"):
            path = build_package(self.models / name, f"{target}-x86_64", signer=self.signer,
                                 out_dir=self.tmp / "packages", version=version,
                                 reference=self.models / reference if reference else None)
            out[target] = {"url": path.as_uri(),
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "version": version}
        return out

    def run(self, spec: dict[str, Any], *, timeout_s: float = 120,
            during: Any = None) -> str:
        rollout_id = self.controller.start_rollout(parse_spec(spec))
        deadline = time.monotonic() + timeout_s
        while True:
            self.controller.tick()
            record = self.controller.state.rollout(rollout_id)
            assert record is not None
            if during is not None:
                during(record)
            if record.status in ("succeeded", "rolled_back", "aborted", "paused"):
                print(rollout_id, record.status, record.reason)
                return record.status

            assert time.monotonic() < deadline, f"rollout still {record.status}"
            time.sleep(0.25)

    def serving(self, thing: str) -> str | None:
        latest = [m for m in self.cloud.of_type("heartbeat") if m.thing == thing]
        return latest[-1].models.get("blue") if latest else None

    def wait_serving(self, things: list[str], version: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(self.serving(t) == version for t in things):
            assert time.monotonic() < deadline, {t: self.serving(t) for t in things}
            time.sleep(0.2)

    def close(self) -> None:
        for agent in self.agents.values():
            if agent.process and agent.process.poll() is None:
                agent.stop()
        self.controller.transport.close()
        self.cloud.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"), built_models)
    yield f
    f.close()


def _spec(name: str, model: str, packages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "packages": packages,
            "groups": ["kitchen", "garage"],
            "strategy": {"type": "canary", "percent": 30, "bake_s": 3},
            # Six agents and the controller share two loaded cores: a microsecond model's
            # p99 jitters by several hundred us, while the slow build adds 25 ms.
            "guardrails": {"min_samples": 40, "min_devices": 1, "max_p99_ratio": 3.0,
                           "min_p99_excess_us": 5000, "max_error_rate": 0.01,
                           "min_agreement": 0.9},
            "timing": {"step_timeout_s": 60}, **extra}


def test_rollouts_on_an_emulated_fleet(fleet: Fleet) -> None:
    things = [t for t, _, _ in DEVICES]
    # 1. digits v1 -> v2: canary (one device per group), then everyone.
    assert fleet.run(_spec("r-v2", "digits-v2", fleet.packages("digits-v2", 2))) == "succeeded"
    fleet.wait_serving(things, "digits-v2")

    # 2. v2 -> slow: the canary breaches the latency guardrail; a canary device is offline
    #    when the fleet-wide rollback is decided, and is rolled back when it returns.
    canary: list[str] = []
    offline: list[str] = []

    def take_one_offline(record: Any) -> None:
        if not canary:
            assignments = fleet.controller.state.assignments("r-slow", step_index=0)
            canary.extend(sorted({a.thing for a in assignments}))
        if canary and not offline and record.status == "running":
            acked = [a for a in fleet.controller.state.assignments("r-slow", thing=canary[0])
                     if a.action == "promote" and a.outcome == "ok"]
            # Offline once its trial of the slow build passed (trialSeconds: 1), so only the
            # controller's rollback can bring it back.
            if acked and time.time() - (acked[0].acked_at or 0) > 2.0:
                offline.append(canary[0])
                fleet.agents[canary[0]].stop()

    # The bad builds of v1 packaged as versions 3 and 4 carry the labels of those versions.
    slow = _spec("r-slow", "digits-v3-slow",
                 fleet.packages("digits-v1-slow", 3, reference="digits-v1"))
    slow["guardrails"]["min_samples"] = 250  # ~5 s of the slow build: time to go offline
    status = fleet.run(slow, during=take_one_offline)
    assert status == "rolled_back"
    record = fleet.controller.state.rollout("r-slow")
    assert record is not None and "p99" in record.reason, record.reason
    online = [t for t in things if t not in offline]
    fleet.wait_serving(online, "digits-v2")
    assert offline, "a canary device was taken offline during the rollout"
    returning = fleet._agent(offline[0], *next((g, b) for t, g, b in DEVICES if t == offline[0]))
    fleet.agents[offline[0]] = returning.start()
    fleet.wait_serving([offline[0]], "digits-v2")

    # 3. v2 -> wrong with a shadow phase: stopped by agreement before any device serves it.
    status = fleet.run(_spec("r-wrong", "digits-v4-wrong", fleet.packages("digits-v1-wrong", 4),
                             shadow={"duration_s": 3, "sample_rate": 1.0}))
    assert status == "rolled_back"
    record = fleet.controller.state.rollout("r-wrong")
    assert record is not None and "agreement" in record.reason, record.reason
    served_wrong = [m for m in fleet.cloud.of_type("heartbeat")
                    if m.models.get("blue") == "digits-v4-wrong"]
    assert served_wrong == [], "no device ever served the wrong build"
    fleet.wait_serving(things, "digits-v2")
