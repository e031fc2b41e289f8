"""A user's own model from SageMaker Neo's output to a rollout, through the commands a user
types: ``models import`` of ``model-<target>.tar.gz`` files (a topology the reference builder
never makes: two inputs with TensorFlow names, one int32, two outputs, one int32; the host
target, a real aarch64 build and two emulated boards; no ONNX anywhere), ``package model``,
``predict`` on the signed package (staged through the real staging, golden vectors from the
host artifact), and a rollout through the real controller to two emulated devices (a
Raspberry Pi 4 and a Jetson Nano) that then report metrics under the new label."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from agent_process import AgentProcess
from cloud import CloudSubscriber
from foreign_neo import FUSION_INPUTS, fusion_reference

from agent.tools.brokers.mosquitto import MosquittoBroker

THINGS = {"byom-pi": "rpi4_64", "byom-nano": "jetson_nano_r32"}
KEY_ID = "ctl-byom"


def edge_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"edge-agent {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def import_fusion(outputs: Path, version: int, dest: Path) -> Path:
    edge_agent("models", "import", str(outputs / "model-ml_c5.tar.gz"),
               str(outputs / "model-rasp4b.tar.gz"), "--name", "fusion", "--version",
               str(version), "--emulate", "rasp4b", "--emulate", "jetson_nano",
               "--out", str(dest))
    return dest


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, neo_outputs: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("byom")
    keys = json.loads(edge_agent("keys", "generate", "--out", str(tmp / "keys"), "--key-id",
                                 KEY_ID, "--json").stdout)
    models = tmp / "models"
    v1 = import_fusion(neo_outputs / "v1", 1, models / "fusion-v1")
    v2 = import_fusion(neo_outputs / "v2", 2, models / "fusion-v2")
    packaged = json.loads(edge_agent(
        "package", "model", str(v2), "--signing-key", keys["private"], "--key-id", KEY_ID,
        "--all", "--out", str(tmp / "packages"), "--json").stdout)
    return {"tmp": tmp, "v1": v1, "v2": v2, "public": Path(keys["public"]),
            "private": Path(keys["private"]),
            **{Path(p).name: Path(p) for p in packaged["packages"]}}


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"sensor_frame": rng.standard_normal((1, 6)).astype(np.float32),
            "event_counts": rng.integers(-5, 20, (1, 3)).astype(np.int32)}


def test_the_import_describes_the_model_and_its_artifacts(work: dict[str, Path]) -> None:
    info = json.loads((work["v2"] / "model.json").read_text())
    assert [(t["name"], t["dtype"], t["shape"]) for t in info["inputs"]] == \
        [(n, d, list(s)) for n, d, s in FUSION_INPUTS]
    assert [t["name"] for t in info["outputs"]] == ["Identity:0", "Identity_1:0"]
    assert info["golden"]["source"] == "dlr-host"
    artifacts = sorted(p.name for p in (work["v2"] / "dlr").iterdir())
    assert artifacts == ["jetson_nano-x86_64", "linux_x86_64-x86_64", "rasp4b-aarch64",
                         "rasp4b-x86_64"]
    assert not (work["v2"] / "onnx").exists(), "no ONNX copy was needed"
    names = {p for p in work if p.endswith(".tar.gz")}
    assert names == {f"fusion-v2-{a}.tar.gz" for a in artifacts}


def test_predict_on_the_signed_package_matches_numpy(work: dict[str, Path]) -> None:
    inputs = sample()
    np.savez(work["tmp"] / "sample.npz", **inputs)
    out = edge_agent("predict", "--model", str(work["fusion-v2-linux_x86_64-x86_64.tar.gz"]),
                     "--trusted-key", f"{KEY_ID}={work['public']}", "--input",
                     str(work["tmp"] / "sample.npz"), "--output", str(work["tmp"] / "out.npz"))
    assert "fusion-v2" in out.stdout, out.stdout
    expected = fusion_reference(inputs["sensor_frame"], inputs["event_counts"])
    with np.load(work["tmp"] / "out.npz") as got:
        assert sorted(got.files) == sorted(expected)
        for name, want in expected.items():
            assert got[name].dtype == want.dtype and got[name].shape == want.shape
            np.testing.assert_allclose(got[name], want, atol=1e-5, rtol=0)


class Fleet:
    """Two emulated devices serving fusion-v1 (the imported directory, unsigned) in group
    ``byom`` on the shared broker, and a cloud subscriber."""

    def __init__(self, work: dict[str, Path], broker: MosquittoBroker) -> None:
        self.work, self.broker = work, broker
        tmp = work["tmp"]
        self.cloud = CloudSubscriber(host="127.0.0.1", port=broker.port,
                                     topic="edge/+/+").start()
        self.agents = [AgentProcess(
            thing=thing, model=work["v1"], state_dir=tmp / thing, broker_port=broker.port,
            log_path=tmp / f"{thing}.log", rate=100, metrics_interval=0.5,
            heartbeat_interval=5.0,
            extra=["--board", board, "--groups", "byom",
                   "--trusted-key", f"{KEY_ID}={work['public']}", "--package-dir",
                   str(work["fusion-v2-rasp4b-x86_64.tar.gz"].parent)]).start()
            for thing, board in THINGS.items()]
        self.cloud.wait_for(lambda ms: {m.thing for m in ms if m.type == "register"}
                            >= set(THINGS), 60, "both devices to register")

    def blue_reports(self, thing: str) -> list[str]:
        return [m.variants["blue"].model_version for m in self.cloud.of_type("metrics")
                if m.thing == thing]

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.cloud.stop()


@pytest.fixture(scope="module")
def fleet(work: dict[str, Path], shared_broker: MosquittoBroker) -> Iterator[Fleet]:
    f = Fleet(work, shared_broker)
    yield f
    f.close()


def test_a_rollout_reaches_emulated_boards_and_they_report_the_new_label(
        work: dict[str, Path], fleet: Fleet) -> None:
    packages: dict[str, Any] = {}
    for target in ("rasp4b", "jetson_nano"):
        path = work[f"fusion-v2-{target}-x86_64.tar.gz"]
        packages[target] = {"url": path.as_uri(), "version": 2,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    spec = {"name": "r-byom-fusion-v2", "model": "fusion-v2", "groups": ["byom"],
            "packages": packages, "strategy": {"type": "all_at_once", "watch_s": 1},
            "guardrails": {"min_samples": 30}, "timing": {"step_timeout_s": 60}}
    spec_path = work["tmp"] / "rollout.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = edge_agent("rollout", "start", str(spec_path), "--broker",
                     f"mqtt://127.0.0.1:{fleet.broker.port}", "--signing-key",
                     str(work["private"]), "--key-id", KEY_ID, "--db",
                     str(work["tmp"] / "rollouts.db"), timeout=180)
    assert "r-byom-fusion-v2: succeeded" in out.stdout, out.stdout
    for thing in THINGS:
        fleet.cloud.wait_for(lambda _ms, t=thing: "fusion-v2" in fleet.blue_reports(t), 30,
                             f"{thing} to report fusion-v2 as blue")
        assert fleet.blue_reports(thing)[0] == "fusion-v1", "it served the import first"


def test_captures_of_a_user_model_keep_every_input_and_output_by_name(
        work: dict[str, Path]) -> None:
    """Capture on a model of two named inputs (one int32) and two outputs (one int32): the
    loop's samples and an application's ask keep every tensor under the model's own names
    and dtypes, and ``capture export --input`` picks the input a trainer wants."""
    from agent.client import InferenceClient
    from agent.device.capture.record import Capture, decode

    home = work["tmp"] / "byom-capture"
    home.mkdir()
    (home / "agent.yaml").write_text(
        "capture:\n  enabled: true\n  maxPerHour: 3600\n"
        "  rules: {sampleRate: 0.05, seed: 3}\n  batch: {maxAgeSeconds: 0.5}\n")
    agent = AgentProcess(thing="byom-capture", model=work["v1"], state_dir=home / "state",
                         broker_port=None, log_path=home / "agent.log", rate=200,
                         extra=["--config", str(home / "agent.yaml")]).start()

    def stored() -> list[Capture]:
        found = []
        for path in sorted((home / "state" / "capture").rglob("*.npz")):
            try:
                found.append(decode(path.read_bytes()))
            except (OSError, ValueError):
                continue  # moved into a batch meanwhile
        return found

    try:
        socket = home / "state" / "inference.sock"
        deadline = time.monotonic() + 60
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with InferenceClient(socket) as client:
            result = client.infer(sample(), capture=True, label="7", note="field unit 4")
        assert result.capture_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                {c.capture_id for c in stored()} >= {result.capture_id}
                and sum(c.rule == "sample" for c in stored()) >= 5
                and any((home / "state" / "capture" / "batches").glob("*/batch.json"))):
            time.sleep(0.2)
    finally:
        assert agent.stop() == 0, agent.log()
    captures = {c.capture_id: c for c in stored()}
    asked = captures[result.capture_id]
    assert (asked.rule, asked.label, asked.note, asked.source) == \
        ("request", "7", "field unit 4", "api")
    for name, want in sample().items():
        assert asked.inputs[name].dtype == want.dtype
        np.testing.assert_array_equal(asked.inputs[name], want)
    expected = fusion_reference(sample()["sensor_frame"], sample()["event_counts"])
    assert sorted(asked.outputs["blue"]) == sorted(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(asked.outputs["blue"][name], want, atol=1e-5, rtol=0)
    sampled = [c for c in captures.values() if c.rule == "sample"]
    assert len(sampled) >= 5
    for capture in sampled:
        assert [(n, a.dtype.str, list(a.shape)) for n, a in capture.inputs.items()] == \
            [(n, np.dtype(d).str, list(s)) for n, d, s in FUSION_INPUTS]
        assert sorted(capture.outputs["blue"]) == sorted(expected)

    from agent.tools.capture.export import export_dataset
    from agent.tools.capture.labels import apply_labels
    from agent.tools.capture.pull import pull_captures

    remote = home / "remote" / "byom-capture"  # a folder destination's layout
    remote.mkdir(parents=True)
    for batch in (home / "state" / "capture" / "batches").iterdir():
        if (batch / "batch.json").exists():
            shutil.copytree(batch, remote / batch.name)
    pulled = pull_captures(remote.parent, home / "dataset")
    assert pulled.captures_new >= 1 and not pulled.refused
    index = [json.loads(line) for line in
             (home / "dataset" / "index.jsonl").read_text().splitlines() if line]
    apply_labels(home / "dataset", {entry["capture_id"]: "1" for entry in index})
    exported = export_dataset(home / "dataset", home / "export", input_name="event_counts")
    assert exported.input_name == "event_counts" and exported.rows == len(index)
    with np.load(home / "export" / "train.npz") as train:
        assert train["x"].shape == (len(index), 3)
