"""User models as Greengrass components, deployed on the emulated nucleus and run.

An x86-only model: ``edge-agent package component`` names the model component after the
model (``com.edgeinference.Model.sensor-fusion``) and gives both components an amd64
manifest only; the nucleus resolves the agent's dependency on that component, runs the
agent's install and run steps, and the agent stages the fusion model's signed package from
the model component (golden vectors from ``golden.npz``, reproduced by libdlr in a child),
registers and reports metrics under the model's label through IPC.

An ONNX-only model (``onnx/model.onnx``, no DLR build): both components get amd64 and
aarch64 manifests, the agent's recipe defaults to the onnx backend, and on this host the
agent stages the model component's ONNX package (golden vectors through ONNX Runtime)
and serves it.

The install step keeps a venv that already holds this agent version: it is pointed at
the test's own environment (as the fleet demo does), so no package index is needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cloud import CloudSubscriber
from model_dirs import fusion_model_dir

from agent.device.platform.elf import host_arch
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.greengrass.component import ComponentOptions, build_components
from agent.tools.nucleus import EmulatedNucleus
from agent.tools.packaging.keys import KeyFiles, keys_generate
from agent.wire.mqtt_config import MqttConfig

AGENT = "com.edgeinference.Agent"
MODEL = "com.edgeinference.Model.sensor-fusion"


def test_an_x86_only_model_component_deploys_and_serves(tmp_path: Path) -> None:
    assert host_arch() == "x86_64", "the x86-only model runs on an x86_64 host"
    models = tmp_path / "models"
    fusion_model_dir(models / "sensor-fusion-v1", builds=["linux_x86_64-x86_64"],
                     name="sensor-fusion", testset=True)
    keys = keys_generate(tmp_path / "keys", "ctl")
    notes: list[str] = []
    written = build_components(ComponentOptions(models=models, key=keys.private, key_id="ctl",
                                                out=tmp_path / "components", uri_base="file"),
                               warn=notes.append)
    assert [(c.name, c.platforms) for c in written] == [(AGENT, ("amd64",)),
                                                        (MODEL, ("amd64",))]
    assert notes == [f"{MODEL} has no build for linux/aarch64, linux/arm: devices of those "
                     f"platforms cannot install it or {AGENT}"]
    log = deploy_and_serve(tmp_path, keys, label="sensor-fusion-v1", backend="dlr",
                           neo_target="linux_x86_64")
    assert "from sensor-fusion-v1-linux_x86_64-x86_64.tar.gz" in log, log[-3000:]


def test_an_onnx_only_model_component_deploys_and_serves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "onnx-fusion-v1", neo=False, onnx=True, name="onnx-fusion",
                     testset=True)
    keys = keys_generate(tmp_path / "keys", "ctl")
    notes: list[str] = []
    written = build_components(ComponentOptions(models=models, key=keys.private, key_id="ctl",
                                                out=tmp_path / "components", uri_base="file"),
                               warn=notes.append)
    model = "com.edgeinference.Model.onnx-fusion"
    assert [(c.name, c.platforms) for c in written] == [(AGENT, ("amd64", "aarch64")),
                                                        (model, ("amd64", "aarch64"))]
    assert len(notes) == 1 and notes[0].startswith(f"{model} runs on the ONNX backend"), notes
    log = deploy_and_serve(tmp_path, keys, label="onnx-fusion-v1", backend="onnx")
    assert "from onnx-fusion-v1-onnx.tar.gz" in log, log[-3000:]


def deploy_and_serve(tmp_path: Path, keys: KeyFiles, *, label: str, backend: str,
                     neo_target: str | None = None) -> str:
    """Deploy the agent from ``tmp_path``'s components on the emulated nucleus with the
    recipe's own backend; check that it registers and reports metrics under ``label``,
    running ``backend``, and stops cleanly on SIGTERM; the agent's log."""
    with EmbeddedBroker() as broker:
        cloud = CloudSubscriber(host=broker.host, port=broker.port, topic="edge/+/+").start()
        nucleus = EmulatedNucleus.from_store(
            tmp_path / "components" / "greengrass-local", {AGENT: None},
            thing_name="byo-1", provided={"variant.DLR"}, root_dir=tmp_path / "gg",
            socket_path=str(Path("/tmp") / f"gg-byo-{tmp_path.name[-8:]}.sock"),
            broker=MqttConfig(host=broker.host, port=broker.port, client_id="byo-1",
                              clean_session=True),
            config_overrides={AGENT: {"trustedKeys": {"ctl": keys.public_b64}, "rateHz": 50,
                                      "metricsIntervalSeconds": 0.5}})
        venv = nucleus.work_dir(AGENT) / "venv"
        venv.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sys.prefix, venv)
        try:
            nucleus.start()
            nucleus.deploy(timeout_s=300)
            cloud.wait_for(lambda ms: any(m.type == "register" for m in ms), 120, "register")
            cloud.wait_for(lambda ms: sum(m.type == "metrics" and m.variants["blue"]
                                          .inferences_total > 0 for m in ms) >= 2, 60,
                           "metrics with inferences")
            register = cloud.of_type("register")[0]
            assert register.models == {"blue": label}
            assert register.backend == backend
            if neo_target is not None:
                assert register.profile.neo_target == neo_target
            metrics = [m for m in cloud.of_type("metrics") if m.variants["blue"].inferences]
            assert all(m.variants["blue"].model_version == label for m in metrics)
            assert all(m.variants["blue"].errors_total == 0 for m in metrics)
            log = nucleus.log_path(AGENT).read_text()
            assert "installed the first model" in log, log[-3000:]
            assert cloud.invalid == []
            nucleus.stop_components()
            states = [(s.state, s.detail) for s in nucleus.lifecycle_states(AGENT)]
            assert states[-1] == ("FINISHED", "exited 0 on SIGTERM"), states
            return log
        finally:
            nucleus.close()
            cloud.stop()
