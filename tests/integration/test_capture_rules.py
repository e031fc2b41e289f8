"""Capture rules inside real agent processes (real DLR, real mosquitto, real signed packages),
each checked against an independent recomputation with the ONNX build of the same models:

- random sampling: the share of a seeded sample over N inferences is within a binomial
  4-sigma band, and a second agent with the same seed keeps the very same frames;
- low confidence: exactly the frames whose top-1 score is below the threshold;
- shadow disagreement (digits-v1 blue, digits-v2 green staged from a signed package, set
  by a signed ``capture`` command): exactly the test-set inputs where green's top-1
  differs from blue's, each capture holding both variants' outputs;
- errors: a model whose every inference fails keeps its inputs with the error;
- refused capture commands (unsigned, forged, malformed, over ``maxBudgetBytes``, on a device
  whose configuration has capture off): an event each, and the rules unchanged;
- capture off (the default): no capture directory and no capture metrics.

Every agent replays the digits test set in order, so the loop's frame id f is test-set
sample (f - 1) % 360.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command
from package_support import package_label

from agent.device.capture.record import Capture, decode
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.commands import CaptureCommand, ShadowCommand, StageCommand
from agent.wire.signing import Signer

ARTIFACT = "linux_x86_64-x86_64"
RATE_HZ = 2500
ERROR_RATE_HZ = 200  # every inference of the failing model is captured
N = 6000  # inferences judged by the sampling and low-confidence checks
SAMPLE_RATE = 0.05
SEED = 20261207
LOW = 0.85  # v1's top-1 scores on the test set: 14 below, none within 0.015 of it
CAPS = ("  maxPerHour: 100000\n  maxPerHourLimit: 100000\n  queueSize: 4096\n"
        "  maxBudgetBytes: 134217728\n")


@dataclass
class Agent:
    thing: str
    root: Path
    agent: AgentProcess
    cloud: CloudSubscriber
    ctl: CloudPublisher
    signer: Signer
    seq: int = 0
    sent: list[str] = field(default_factory=list)

    def send(self, cls: Any, **args: Any) -> str:
        self.seq += 1
        payload = signed_command(self.signer, cls, thing=self.thing, rollout_id="cap",
                                 rollout_seq=self.seq, **args)
        self.publish(payload)
        return str(json.loads(payload)["command_id"])

    def publish(self, payload: bytes) -> None:
        self.ctl.publish(f"edge/{self.thing}/commands", payload)

    def ack(self, command_id: str, timeout_s: float = 60) -> Any:
        self.cloud.wait_for(lambda ms: any(m.type == "ack" and m.command_id == command_id
                                           for m in ms), timeout_s, f"ack of {command_id}")
        return next(m for m in self.cloud.of_type("ack") if m.command_id == command_id)

    def events(self, kind: str) -> list[Any]:
        return [m for m in self.cloud.of_type("event") if m.kind == kind]

    def inferences(self, variant: str = "blue") -> int:
        metrics = [m for m in self.cloud.of_type("metrics") if variant in m.variants]
        return metrics[-1].variants[variant].inferences_total if metrics else 0

    def wait_inferences(self, count: int, variant: str = "blue", timeout_s: float = 60) -> None:
        self.cloud.wait_for(lambda ms: any(
            m.type == "metrics" and variant in m.variants
            and m.variants[variant].inferences_total >= count for m in ms), timeout_s,
            f"{count} {variant} inferences on {self.thing}")

    def wait_captured_past(self, frame_id: int, timeout_s: float = 60) -> list[Capture]:
        """Captures once one of a later frame is on disk: the writer stores in order, so
        every capture of frames up to ``frame_id`` is stored by then."""
        deadline = time.monotonic() + timeout_s
        while True:
            captures = self.captures()
            if captures and captures[-1].frame_id > frame_id:
                return captures
            assert time.monotonic() < deadline, f"no capture past frame {frame_id}"
            time.sleep(0.3)

    def captures(self) -> list[Capture]:
        """Every capture on disk while the agent runs: open ones first, then sealed
        batches (a capture sealed in between is found in its batch)."""
        found: dict[str, Capture] = {}
        store = self.state / "capture"
        for pattern in ("open/*.npz", "batches/*/*.npz"):
            for path in sorted(store.glob(pattern)):
                try:
                    capture = decode(path.read_bytes())
                except FileNotFoundError:
                    continue  # sealed meanwhile: read from its batch
                found[capture.capture_id] = capture
        return sorted(found.values(), key=lambda c: c.frame_id)

    @property
    def state(self) -> Path:
        return self.root / "state"


def _scores(model_dir: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "onnx" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: row.reshape(1, -1)})[0] for row in x])


@pytest.fixture(scope="module")
def reference(built_models: Path) -> dict[str, np.ndarray]:
    with np.load(built_models / "digits-v1" / "testset.npz") as data:
        x = data["x"].astype(np.float32)
    return {"x": x, "v1": _scores(built_models / "digits-v1", x),
            "v2": _scores(built_models / "digits-v2", x)}


@pytest.fixture(scope="module")
def fleet(shared_broker: MosquittoBroker, built_models: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Agent]]:
    root = tmp_path_factory.mktemp("capture-rules")
    keys = keys_generate(root, "ctl-1")
    signer = Signer.from_file(keys.private, key_id="ctl-1")
    v2 = build_package(built_models / "digits-v2", ARTIFACT, signer=signer, out_dir=root,
                       version=2)
    sampled = (f"capture:\n  enabled: true\n{CAPS}  rules: {{sampleRate: {SAMPLE_RATE}, "
               f"lowConfidence: {LOW}, seed: {SEED}, requests: false}}\n")
    setups = {
        "capr-a": ("digits-v1", sampled, RATE_HZ),
        "capr-b": ("digits-v1", sampled, RATE_HZ),
        "capr-err": ("digits-v1-crash", f"capture:\n  enabled: true\n{CAPS}"
                                        "  rules: {sampleRate: 0.0}\n", ERROR_RATE_HZ),
        "capr-off": ("digits-v1", "", RATE_HZ),
    }
    agents: dict[str, Agent] = {}
    for thing, (model, capture, rate) in setups.items():
        home = root / thing
        home.mkdir()
        (home / "agent.yaml").write_text(
            f"goldenTimeoutSeconds: 8\npackageDirs: [{v2.parent}]\n{capture}")
        cloud = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                                topic=f"edge/{thing}/#").start()
        process = AgentProcess(thing=thing, model=built_models / model, state_dir=home / "state",
                               broker_port=shared_broker.port, log_path=home / "agent.log",
                               rate=rate, metrics_interval=0.3, extra=[
                                   "--trusted-key", f"ctl-1={keys.public}",
                                   "--config", str(home / "agent.yaml")]).start()
        agents[thing] = Agent(thing=thing, root=home, agent=process, cloud=cloud,
                              ctl=CloudPublisher("127.0.0.1", shared_broker.port),
                              signer=signer)
    agents["capr-a"].root.joinpath("v2").write_text(str(v2))
    for agent in agents.values():
        agent.cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 60,
                             f"{agent.thing} up")
    yield agents
    for agent in agents.values():  # all at once: each flushes its writer and spool
        assert agent.agent.process is not None
        agent.agent.process.send_signal(signal.SIGTERM)
    for agent in agents.values():
        agent.ctl.close()
        code = agent.agent.stop()
        agent.cloud.stop()
        assert code == 0, agent.agent.log()
        assert agent.cloud.invalid == []


def _sampled(agent: Agent) -> list[int]:
    return [c.frame_id for c in agent.wait_captured_past(N)
            if c.rule == "sample" and c.frame_id <= N]


def test_random_rate_is_within_bounds_and_a_seed_repeats_its_frames(
        fleet: dict[str, Agent]) -> None:
    a, b = fleet["capr-a"], fleet["capr-b"]
    frames_a, frames_b = _sampled(a), _sampled(b)
    sigma = math.sqrt(N * SAMPLE_RATE * (1 - SAMPLE_RATE))
    assert abs(len(frames_a) - N * SAMPLE_RATE) < 4 * sigma, len(frames_a)
    assert frames_a == frames_b, "the same seed keeps the same frames"
    assert len(set(frames_a)) == len(frames_a)
    for agent in (a, b):
        metrics = agent.cloud.of_type("metrics")[-1]
        assert metrics.capture is not None
        assert metrics.capture.dropped_queue == 0 and metrics.capture.dropped_rate == 0
        assert metrics.capture.fired["sample"] >= len(frames_a)
        assert metrics.capture.rules_from == "configuration"


def test_low_confidence_keeps_exactly_the_frames_below_the_threshold(
        fleet: dict[str, Agent], reference: dict[str, np.ndarray]) -> None:
    top1 = reference["v1"].max(axis=1)
    expected = [f for f in range(1, N + 1) if top1[(f - 1) % len(top1)] < LOW]
    assert len(expected) > 100
    a = fleet["capr-a"]
    captures = [c for c in a.wait_captured_past(N) if c.frame_id <= N]
    low = [c for c in captures if c.rule == "low_confidence"]
    assert low and all(c.score is not None and c.score < LOW for c in low)
    kept = sorted(c.frame_id for c in captures
                  if c.rule == "low_confidence" or (c.score is not None and c.score < LOW))
    assert kept == expected
    for capture in captures:
        row = (capture.frame_id - 1) % len(top1)
        np.testing.assert_array_equal(capture.inputs["input"].reshape(-1), reference["x"][row])
        np.testing.assert_allclose(capture.outputs["blue"]["probabilities"].reshape(-1),
                                   reference["v1"][row], atol=1e-4)
        assert capture.variants == {"blue": "digits-v1"} and capture.served_by == "blue"
        assert capture.thing == "capr-a" and capture.model == "digits"


def test_shadow_disagreement_keeps_exactly_where_green_differs(
        fleet: dict[str, Agent], reference: dict[str, np.ndarray]) -> None:
    a = fleet["capr-a"]
    a.wait_captured_past(N)
    rules = {"sample_rate": 0.0, "disagreement": True, "errors": False, "requests": False}
    ack = a.ack(a.send(CaptureCommand, enabled=True, rules=rules))
    assert ack.outcome == "ok", ack.reason
    package = Path(a.root.joinpath("v2").read_text())
    ack = a.ack(a.send(StageCommand, url=package.as_uri(), version=package_label(package),
                       sha256=hashlib.sha256(package.read_bytes()).hexdigest()))
    assert ack.outcome == "ok", ack.reason
    ack = a.ack(a.send(ShadowCommand, sample_rate=1.0))
    assert ack.outcome == "ok", ack.reason
    start = a.inferences("green")
    a.wait_inferences(start + 3 * 360, "green")
    disagree = set(np.flatnonzero(reference["v1"].argmax(1) != reference["v2"].argmax(1)))
    assert 0 < len(disagree) < 30
    kept = [c for c in a.captures() if c.rule == "disagreement"]
    assert {(c.frame_id - 1) % 360 for c in kept} == disagree
    for capture in kept:
        row = (capture.frame_id - 1) % 360
        np.testing.assert_array_equal(capture.inputs["input"].reshape(-1), reference["x"][row])
        assert capture.variants == {"blue": "digits-v1", "green": "digits-v2"}
        blue = capture.outputs["blue"]["probabilities"].reshape(-1)
        green = capture.outputs["green"]["probabilities"].reshape(-1)
        assert blue.argmax() != green.argmax()
        np.testing.assert_allclose(green, reference["v2"][row], atol=1e-4)
    metrics = a.cloud.of_type("metrics")[-1]
    assert metrics.capture.rules_from == "command" and metrics.capture.dropped_queue == 0
    saved = json.loads((a.state / "capture" / "rules.json").read_text())
    assert saved["rules"]["sample_rate"] == 0.0 and saved["enabled"] is True


def test_a_failing_model_keeps_its_inputs_with_the_error(
        fleet: dict[str, Agent], reference: dict[str, np.ndarray]) -> None:
    agent = fleet["capr-err"]
    agent.cloud.wait_for(lambda ms: any(m.type == "metrics" and m.capture is not None
                                        and m.capture.stored >= 50 for m in ms), 60,
                         "50 error captures stored")
    captures = agent.captures()
    assert len(captures) >= 50
    for capture in captures:
        assert capture.rule == "error" and capture.served_by == "" and capture.outputs == {}
        assert capture.error is not None and "RunDLRModel failed" in capture.error
        assert capture.variants == {"blue": "digits-v1-crash"}
        np.testing.assert_array_equal(capture.inputs["input"].reshape(-1),
                                      reference["x"][(capture.frame_id - 1) % 360])


def test_bad_capture_commands_are_refused_and_change_nothing(fleet: dict[str, Agent]) -> None:
    b = fleet["capr-b"]
    b.wait_captured_past(N)
    good = json.loads(signed_command(b.signer, CaptureCommand, thing=b.thing,
                                     rollout_id="cap-bad", rollout_seq=1, enabled=False))
    unsigned = {k: v for k, v in good.items() if k not in ("signature", "key_id")}
    b.publish(json.dumps(unsigned).encode())
    b.publish(json.dumps({**good, "args": {"enabled": True,
                                           "rules": {"sample_rate": 5}}}).encode())
    b.publish(json.dumps({**good, "args": {"enabled": "yes"}}).encode())
    forged = {**good, "args": {"enabled": True, "rules": {"sample_rate": 1.0}}}
    b.publish(json.dumps(forged).encode())  # valid, but not what was signed
    b.cloud.wait_for(lambda ms: sum(m.type == "event" and m.kind == "rejected_message"
                                    for m in ms) >= 4, 30, "four rejections")
    codes = sorted(e.data["code"] for e in b.events("rejected_message"))
    assert codes == ["bad_signature", "missing_signature", "schema", "schema"], codes
    over = b.send(CaptureCommand, enabled=True, budget_bytes=134217728 + 1,
                  rules={"sample_rate": 1.0})
    ack = b.ack(over)
    assert ack.outcome == "rejected" and ack.data["code"] == "capture_rules_refused"
    assert "maxBudgetBytes" in ack.reason
    (event,) = b.events("capture_rules_rejected")
    assert event.related_id == over and "over this device's maxBudgetBytes" in event.detail
    assert not (b.state / "capture" / "rules.json").exists()
    before = b.cloud.of_type("metrics")[-1].capture.fired["sample"]
    b.cloud.wait_for(lambda ms: ms[-1].type == "metrics" and ms[-1].capture.fired["sample"]
                     > before + 10, 30, "sampling goes on under the configured rules")
    assert b.cloud.of_type("metrics")[-1].capture.rules_from == "configuration"


def test_capture_off_builds_nothing_and_refuses_the_command(fleet: dict[str, Agent]) -> None:
    off = fleet["capr-off"]
    ack = off.ack(off.send(CaptureCommand, enabled=True, rules={"sample_rate": 1.0}))
    assert ack.outcome == "rejected" and ack.data["code"] == "capture_rules_refused"
    assert "capture is not enabled in this device's configuration" in ack.reason
    (event,) = off.events("capture_rules_rejected")
    assert event.data["code"] == "capture_rules_refused"
    off.wait_inferences(2 * RATE_HZ)
    assert not (off.state / "capture").exists()
    assert all(m.capture is None for m in off.cloud.of_type("metrics"))
    assert "capture on" not in off.agent.log_path.read_text()
