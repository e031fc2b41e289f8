"""Model swaps end to end on one emulated device over a real broker: signed packages, shadow,
weights, promote; local guardrails on the bad builds; crash points; a restart mid-trial."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command
from package_support import package_label

from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.commands import (
    PromoteCommand,
    RollbackCommand,
    SetWeightsCommand,
    ShadowCommand,
    StageCommand,
    StatusCommand,
)
from agent.wire.signing import Signer

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
ARTIFACT = "linux_x86_64-x86_64"


@dataclass
class Device:
    thing: str
    broker: MosquittoBroker
    cloud: CloudSubscriber
    ctl: CloudPublisher
    signer: Signer
    packages: dict[str, Path]
    agent: AgentProcess
    seq: int = 0

    def send(self, cls: Any, rollout: str = "r1", **args: Any) -> str:
        self.seq += 1
        payload = signed_command(self.signer, cls, thing=self.thing, rollout_id=rollout,
                                 rollout_seq=self.seq, **args)
        self.ctl.publish(f"edge/{self.thing}/commands", payload)
        return str(__import__("json").loads(payload)["command_id"])

    def ack(self, command_id: str, timeout_s: float = 60) -> Any:
        self.cloud.wait_for(lambda ms: any(m.type == "ack" and m.command_id == command_id
                                           for m in ms), timeout_s, f"ack of {command_id}")
        return next(m for m in self.cloud.of_type("ack") if m.command_id == command_id)

    def stage(self, name: str, rollout: str = "r1") -> Any:
        """Stage the package of model directory ``name``, expecting the label it carries
        (the bad builds of v1, packaged as version 3, are ``digits-v3-<variant>``)."""
        package = self.packages[name]
        return self.ack(self.send(StageCommand, rollout, url=package.as_uri(),
                                  sha256=hashlib.sha256(package.read_bytes()).hexdigest(),
                                  version=package_label(package)))

    def state(self) -> Any:
        command_id = self.send(StatusCommand)
        self.ack(command_id)
        self.cloud.wait_for(lambda ms: any(m.type == "state" and m.in_reply_to == command_id
                                           for m in ms), 30, "state reply")
        return next(m for m in self.cloud.of_type("state") if m.in_reply_to == command_id)

    def events(self, kind: str) -> list[Any]:
        return [m for m in self.cloud.of_type("event") if m.kind == kind]


@pytest.fixture(scope="module")
def packages(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("packages")
    keys = keys_generate(root, "ctl-1")
    signer = Signer.from_file(keys.private, key_id="ctl-1")
    out: dict[str, Any] = {"key": keys.public, "signer": signer}
    v1 = built_models / "digits-v1"
    for name, version, reference in [("digits-v2", 2, None), ("digits-v1-slow", 3, v1),
                                     ("digits-v1-wrong", 3, None), ("digits-v1-crash", 3, v1),
                                     ("digits-v1-segfault", 3, v1), ("digits-v1-hang", 3, v1)]:
        out[name] = build_package(built_models / name, ARTIFACT, signer=signer, out_dir=root,
                                  version=version, reference=reference)
    return out


def _device(tmp_path: Path, built_models: Path, packages: dict[str, Any], thing: str,
            config: str = "", env: dict[str, str] | None = None) -> Iterator[Device]:
    broker = MosquittoBroker(workdir=tmp_path / "broker")
    broker.start()
    (tmp_path / "agent.yaml").write_text(
        "trialSeconds: 2\ngoldenTimeoutSeconds: 4\nguardrails:\n  minSamples: 30\n"
        f"packageDirs: [{packages['digits-v2'].parent}]\n" + config)
    cloud = CloudSubscriber(host="127.0.0.1", port=broker.port, topic=f"edge/{thing}/#").start()
    agent = AgentProcess(thing=thing, model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=broker.port,
                         log_path=tmp_path / "agent.log", rate=400, extra=[
                             "--trusted-key", f"ctl-1={packages['key']}",
                             "--config", str(tmp_path / "agent.yaml")])
    if env:
        os.environ.update(env)
    try:
        agent.start()
    finally:
        for key in env or {}:
            os.environ.pop(key, None)
    cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "agent up")
    device = Device(thing=thing, broker=broker, cloud=cloud,
                    ctl=CloudPublisher("127.0.0.1", broker.port), signer=packages["signer"],
                    packages={k: v for k, v in packages.items() if k.startswith("digits")},
                    agent=agent)
    yield device
    device.ctl.close()
    running = device.agent  # a test may have restarted the agent: stop the one running now
    if running.process and running.process.poll() is None:
        assert running.stop() == 0, running.log()
    cloud.stop()
    broker.stop()


@pytest.fixture
def device(tmp_path: Path, built_models: Path, packages: dict[str, Any]) -> Iterator[Device]:
    yield from _device(tmp_path, built_models, packages, "swap-1")


@pytest.fixture
def steady_device(tmp_path: Path, built_models: Path, packages: dict[str, Any]) -> Iterator[Device]:
    # v1 and v2 disagree on ~3 % of the digits: judge agreement on enough samples that a
    # good candidate cannot trip the 90 % limit by chance.
    yield from _device(tmp_path, built_models, packages, "swap-0",
                       config="guardrails:\n  minSamples: 600\n")


def test_stage_shadow_weights_promote(steady_device: Device) -> None:
    device = steady_device
    assert device.stage("digits-v2").outcome == "ok"
    assert device.state().models == {"blue": "digits-v1", "green": "digits-v2"}
    assert device.ack(device.send(ShadowCommand, sample_rate=1.0)).outcome == "ok"
    time.sleep(1.0)
    shadow = device.state()
    assert shadow.mode == "shadow" and shadow.trial.candidate == "digits-v2"
    for blue, green in ((90, 10), (50, 50)):
        assert device.ack(device.send(SetWeightsCommand, blue=blue, green=green)).outcome == "ok"
        time.sleep(1.0)
        state = device.state()
        assert state.mode == "weighted" and (state.weights.blue, state.weights.green) == \
            (blue, green)
    device.cloud.wait_for(lambda ms: any(m.type == "metrics" and "green" in m.variants and
                                         m.variants["green"].checked_total > 50 for m in ms),
                          30, "green metrics")
    green = [m.variants["green"] for m in device.cloud.of_type("metrics")
             if "green" in m.variants][-1]
    assert green.model_version == "digits-v2"
    assert green.correct_total / green.checked_total >= 0.95, "v2's accuracy, measured live"
    assert device.ack(device.send(PromoteCommand)).outcome == "ok"
    assert device.state().models == {"blue": "digits-v2"}
    device.cloud.wait_for(lambda ms: any(m.type == "event" and "trial of" in m.detail
                                         for m in ms), 30, "trial confirmed")
    errors = sum(m.variants[v].errors for m in device.cloud.of_type("metrics")
                 for v in m.variants)
    assert errors == 0, "no inference failed across every switch"
    assert device.cloud.invalid == []


def test_slow_build_in_weighted_mode_is_rolled_back_locally(device: Device) -> None:
    assert device.stage("digits-v1-slow").outcome == "ok"
    assert device.ack(device.send(SetWeightsCommand, blue=50, green=50)).outcome == "ok"
    device.cloud.wait_for(lambda ms: any(m.type == "event" and m.kind == "local_rollback"
                                         for m in ms), 60, "local rollback")
    breach = device.events("guardrail_breach")[0]
    assert breach.data["rule"] in ("p99_latency_ratio", "p99_latency")
    state = device.state()
    assert state.models == {"blue": "digits-v1"} and state.mode == "serve"
    assert (state.weights.blue, state.weights.green) == (100, 0)
    errors = sum(m.variants[v].errors for m in device.cloud.of_type("metrics")
                 for v in m.variants)
    assert errors == 0, "no request failed"


def test_wrong_build_in_shadow_is_rolled_back_before_serving(device: Device) -> None:
    assert device.stage("digits-v1-wrong").outcome == "ok"
    assert device.ack(device.send(ShadowCommand, sample_rate=1.0)).outcome == "ok"
    device.cloud.wait_for(lambda ms: any(m.type == "event" and m.kind == "local_rollback"
                                         for m in ms), 60, "local rollback")
    assert device.events("guardrail_breach")[0].data["rule"] == "agreement"
    assert device.state().models == {"blue": "digits-v1"}
    served_by_green = [m.variants["green"].inferences for m in device.cloud.of_type("metrics")
                       if "green" in m.variants]
    assert all(n >= 0 for n in served_by_green)  # shadow counts are compared, never served


@pytest.mark.parametrize(("build", "reason"), [("digits-v1-crash", "golden"),
                                               ("digits-v1-segfault", "SIGSEGV"),
                                               ("digits-v1-hang", "time")])
def test_crashing_builds_never_get_past_staging(device: Device, build: str,
                                                reason: str) -> None:
    ack = device.stage(build)
    assert ack.outcome == "failed" and reason.lower() in ack.reason.lower(), ack.reason
    before = len(device.cloud.of_type("metrics"))
    device.cloud.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= before + 2, 30,
                          "still serving")
    assert device.state().models == {"blue": "digits-v1"}
    assert device.agent.process is not None and device.agent.process.poll() is None


def test_rollback_command_after_promote_returns_to_the_previous_model(device: Device) -> None:
    assert device.stage("digits-v2").outcome == "ok"
    assert device.ack(device.send(PromoteCommand)).outcome == "ok"
    assert device.ack(device.send(RollbackCommand)).outcome == "ok"
    assert device.state().models == {"blue": "digits-v1"}


# Which commands reach each crash point, and the model serving after the restart.
CRASHES = {
    "mid-download": (["stage"], "digits-v1"),
    "mid-extract": (["stage"], "digits-v1"),
    "after-version-copy": (["stage"], "digits-v1"),
    "before-verified-marker": (["stage"], "digits-v1"),
    "mid-load": (["stage"], "digits-v1"),
    "after-trial-marker": (["stage", "promote"], "digits-v1"),
    "before-pointer-rename": (["stage", "promote"], "digits-v1"),
    "after-rename-before-dir-fsync": (["stage", "promote"], "digits-v1"),
    "during-trial": (["stage", "promote"], "digits-v1"),
    "after-rollback-intent": (["stage", "promote", "rollback"], "digits-v1"),
}


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_killed_at_each_crash_point_recovers_to_a_verified_model(
        tmp_path: Path, built_models: Path, packages: dict[str, Any], point: str) -> None:
    steps, serving = CRASHES[point]
    gen = _device(tmp_path, built_models, packages, "crash-1",
                  config="trialSeconds: 30\n", env={"EDGE_AGENT_CRASH_AT": point})
    device = next(gen)
    try:
        for step in steps:
            if step == "stage":
                device.send(StageCommand, url=device.packages["digits-v2"].as_uri(),
                            sha256=hashlib.sha256(
                                device.packages["digits-v2"].read_bytes()).hexdigest(),
                            version="digits-v2")
            else:
                device.send({"promote": PromoteCommand, "rollback": RollbackCommand}[step])
            time.sleep(0.8 if step != steps[-1] else 0)
        process = device.agent.process
        assert process is not None
        assert process.wait(60) == -9, f"not killed at {point}: {device.agent.log()}"
        # Restart without the crash point: it must come back on a verified model.
        device.agent = AgentProcess(thing="crash-1", model=built_models / "digits-v1",
                                    state_dir=tmp_path / "state",
                                    broker_port=device.broker.port,
                                    log_path=tmp_path / "agent.log", rate=400, extra=[
                                        "--trusted-key", f"ctl-1={packages['key']}",
                                        "--config", str(tmp_path / "agent.yaml")]).start()
        device.cloud.wait_for(lambda ms: sum(m.type == "register" for m in ms) >= 2, 30,
                              "the restarted agent")
        assert device.state().models == {"blue": serving}
        # The next command works: stage (again) and promote.
        assert device.stage("digits-v2", rollout="r2").outcome == "ok"
        assert device.ack(device.send(PromoteCommand, rollout="r2")).outcome == "ok"
        assert device.state().models == {"blue": "digits-v2"}
    finally:
        next(gen, None)


def test_candidate_is_refused_when_memory_would_not_hold_both(
        tmp_path: Path, built_models: Path, packages: dict[str, Any]) -> None:
    import shutil

    from agent.tools.boards import board_root

    board = tmp_path / "board"
    shutil.copytree(board_root("x86_laptop"), board)
    meminfo = board / "proc" / "meminfo"
    meminfo.write_text("\n".join(
        "MemAvailable:         64 kB" if line.startswith("MemAvailable") else line
        for line in meminfo.read_text().splitlines()) + "\n")
    gen = _device(tmp_path, built_models, packages, "mem-1", config=f"deviceRoot: {board}\n")
    device = next(gen)
    try:
        ack = device.stage("digits-v2")
        assert ack.outcome == "failed" and "not enough free memory" in ack.reason, ack.reason
        assert device.state().models == {"blue": "digits-v1"}
    finally:
        next(gen, None)
