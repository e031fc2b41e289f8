"""The agent under the emulated Greengrass nucleus, through the real awsiotsdk IPC client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud import CloudSubscriber
from paths import REPO_ROOT

from agent.device.app.config import load_config
from agent.device.app.service import AgentService
from agent.device.greengrass.component import GreengrassComponent
from agent.device.uplink.ipc import IpcTransport
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.greengrass.recipe import Recipe
from agent.tools.nucleus.server import EmulatedNucleus
from agent.wire.messages import Metrics

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
RECIPE = REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml"
THING = "gg-dev-1"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(workdir=tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def cloud(broker: MosquittoBroker) -> Iterator[CloudSubscriber]:
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic=f"edge/{THING}/#").start()
    yield sub
    sub.stop()


def _nucleus(broker: MosquittoBroker, built_models: Path, tmp_path: Path,
             **overrides: object) -> EmulatedNucleus:
    config = {"modelDir": str(built_models / "digits-v1"), "stateDir": str(tmp_path / "state"),
              "rateHz": 200, "metricsIntervalSeconds": 2.0, "heartbeatIntervalSeconds": 1.0,
              **overrides}
    return EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name=THING,
                           broker=broker.address,
                           config_overrides={"com.edgeinference.Agent": config})


def test_agent_process_reports_through_ipc_and_applies_config_live(
        broker: MosquittoBroker, cloud: CloudSubscriber, built_models: Path,
        tmp_path: Path) -> None:
    with _nucleus(broker, built_models, tmp_path) as nucleus:
        agent = nucleus.launch(argv=[sys.executable, "-m", "agent.cli", "serve"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            cloud.wait_for(lambda ms: any(m.type == "register" for m in ms), 30, "register")
            cloud.wait_for(lambda ms: sum(m.type == "heartbeat" for m in ms) >= 2, 15,
                           "two heartbeats")
            cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 15, "metrics")
            assert "RUNNING" in nucleus.states()
            register = cloud.of_type("register")[0]
            assert register.thing == THING and register.models == {"blue": "digits-v1"}
            first: Metrics = cloud.of_type("metrics")[0]
            blue = first.variants["blue"]
            assert blue.model_version == "digits-v1" and blue.inferences > 0

            # Slow interval (2 s) -> fast (0.25 s), pushed by the nucleus, applied live.
            before = len(cloud.of_type("metrics"))
            nucleus.update_configuration({"metricsIntervalSeconds": 0.25})
            changed_at = time.monotonic()
            cloud.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= before + 6, 10,
                           "metrics at the new interval")
            assert time.monotonic() - changed_at < 4.0, "six reports should take ~1.5 s"
        finally:
            agent.send_signal(signal.SIGTERM)
            out, _ = agent.communicate(timeout=30)
        assert agent.returncode == 0, out.decode()[-2000:]
    assert cloud.invalid == []
    states = cloud.of_type("state")
    assert states, "a final state report on SIGTERM"
    seqs = [m.seq for m in cloud.messages]
    assert len(seqs) == len(set(seqs))


def test_component_update_is_deferred_during_a_rollout_then_accepted(
        broker: MosquittoBroker, cloud: CloudSubscriber, built_models: Path,
        tmp_path: Path) -> None:
    with _nucleus(broker, built_models, tmp_path) as nucleus:
        transport = IpcTransport.from_environ(nucleus.ipc_env())
        config = load_config({"thingName": THING, "modelDir": str(built_models / "digits-v1"),
                              "stateDir": str(tmp_path / "state"), "rateHz": 100})
        service = AgentService(config=config, transport=transport,
                               greengrass=GreengrassComponent(transport.connection))
        service.updates.recheck_after_ms = 300
        service.start()
        try:
            service.updates.hold("rollout-7")
            update = nucleus.announce_component_update("deployment-1")
            time.sleep(1.0)
            assert service.updates.deferred.count("deployment-1") >= 2, "deferred, asked again"
            assert update.deferred
            cloud.wait_for(lambda ms: any(m.type == "event" and m.kind == "update_deferred"
                                          and m.data.get("deployment_id") == "deployment-1"
                                          for m in ms), 15, "the deferral reported")
            service.updates.release("rollout-7")
            assert update.wait(10) == "accepted"
            deadline = time.monotonic() + 5
            while not service.updates.accepted and time.monotonic() < deadline:
                time.sleep(0.05)  # the nucleus can see the answer before the call returns
            assert service.updates.accepted == ["deployment-1"]
        finally:
            service.shutdown()


def test_nucleus_restarts_lose_and_reorder_nothing(
        broker: MosquittoBroker, cloud: CloudSubscriber, built_models: Path,
        tmp_path: Path) -> None:
    nucleus = _nucleus(broker, built_models, tmp_path, metricsIntervalSeconds=0.2,
                       heartbeatIntervalSeconds=0.5)
    nucleus.start()
    agent = nucleus.launch(argv=[sys.executable, "-m", "agent.cli", "serve"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "first metrics")
        for _ in range(5):
            nucleus.stop()
            time.sleep(1.0)  # the agent keeps serving and spooling while the nucleus is gone
            nucleus.start()
            time.sleep(1.5)
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=60)
        assert agent.returncode == 0, out.decode()[-2000:]
        cloud.wait_for(lambda ms: any(m.type == "state" for m in ms), 30, "final state")
    finally:
        if agent.poll() is None:
            agent.kill()
        nucleus.stop()
    seen: set[str] = set()
    unique = [m for m in cloud.messages if not (m.id in seen or seen.add(m.id))]
    print(f"duplicates dropped after de-duplication by message id: "
          f"{len(cloud.messages) - len(unique)}")
    seqs = [m.seq for m in unique]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every report once, in order"
    assert sum(m.type == "metrics" for m in unique) >= 20
