"""An ONNX-only model (no Neo artifact at all) rolled out to a device whose agent runs the
ONNX backend: packaged with ``edge-agent package model --backend onnx``, sent by the real
controller (``edge-agent rollout start``) over a real broker as the spec's ``onnx`` package,
staged with its golden vectors reproduced by ONNX Runtime in the agent's child, promoted and
confirmed; the device's store and metrics say it serves the new label."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from agent_process import AgentProcess
from cloud import CloudSubscriber
from model_dirs import fusion_model_dir

from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.tools.packaging.keys import keys_generate

THING = "onnx-dev-1"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_an_onnx_model_rolls_out_to_an_onnx_device(shared_broker: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    serving = fusion_model_dir(tmp_path / "fusion-v1", version="1", neo=False, onnx=True)
    candidate = fusion_model_dir(tmp_path / "fusion-v2", version="2", neo=False, onnx=True)
    keys = keys_generate(tmp_path / "keys", "ctl-onnx")
    signing = ["--signing-key", str(keys.private), "--key-id", "ctl-onnx"]
    packaged = _cli("package", "model", str(candidate), "--backend", "onnx", *signing,
                    "--out", str(tmp_path / "packages"), "--json")
    assert packaged.returncode == 0, packaged.stderr
    (package,) = map(Path, json.loads(packaged.stdout)["packages"])
    assert package.name == "fusion-v2-onnx.tar.gz"

    port = shared_broker.port
    cloud = CloudSubscriber(host="127.0.0.1", port=port, topic=f"edge/{THING}/#").start()
    agent = AgentProcess(thing=THING, model=serving, state_dir=tmp_path / "state",
                         broker_port=port, log_path=tmp_path / "agent.log", rate=200,
                         metrics_interval=0.5, heartbeat_interval=5.0, extra=[
                             "--backend", "onnx", "--source", "random", "--groups", "onnx-lab",
                             "--trusted-key", f"ctl-onnx={keys.public}",
                             "--package-dir", str(package.parent)]).start()
    try:
        cloud.wait_for(lambda ms: any(m.type == "register" for m in ms), 60, "the agent")
        register = next(m for m in cloud.of_type("register"))
        assert register.backend == "onnx"
        spec: dict[str, Any] = {
            "name": "r-fusion-onnx", "model": "fusion-v2", "groups": ["onnx-lab"],
            "packages": {"onnx": {"url": package.as_uri(), "version": 2,
                                  "sha256": hashlib.sha256(package.read_bytes()).hexdigest()}},
            "strategy": {"type": "all_at_once", "watch_s": 1},
            "guardrails": {"min_samples": 30}, "timing": {"step_timeout_s": 60}}
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        rollout = _cli("rollout", "start", str(tmp_path / "spec.yaml"), "--broker",
                       f"mqtt://127.0.0.1:{port}", *signing, "--db", str(tmp_path / "ctl.db"),
                       "--discover", "3")
        assert rollout.returncode == 0, rollout.stdout + rollout.stderr + agent.log()
        assert "r-fusion-onnx: succeeded" in rollout.stdout, rollout.stdout
        assert "confirm: 1/1 acknowledged (1 confirmed)" in rollout.stdout, rollout.stdout

        stage = next(m for m in cloud.of_type("ack") if m.data.get("model") == "fusion-v2"
                     and "staged" in m.reason)
        assert stage.outcome == "ok" and stage.data["package_version"] == 2
        store = tmp_path / "state" / "models"
        version_id = json.loads((store / "current").read_text())["version_id"]
        manifest = json.loads((store / "versions" / version_id / "manifest.json").read_text())
        assert (manifest["label"], manifest["backend"], manifest["target"]) == (
            "fusion-v2", "onnx", "any")
        assert not (store / "trial").exists(), "the rollout's confirm ended the trial"
        deadline = time.monotonic() + 20
        while True:  # the device reports the new label in its metrics
            latest = [m for m in cloud.of_type("metrics")][-1]
            if latest.variants["blue"].model_version == "fusion-v2" and \
                    latest.variants["blue"].inferences > 0:
                break
            assert time.monotonic() < deadline, latest
            time.sleep(0.2)
        assert sum(v.errors_total for m in cloud.of_type("metrics")
                   for v in m.variants.values()) == 0
        assert cloud.invalid == []
    finally:
        assert agent.stop() == 0, agent.log()
        cloud.stop()
