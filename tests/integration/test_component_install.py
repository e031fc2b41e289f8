"""The agent component installed and run the way a Greengrass core does it, with nothing
prepared: the emulated nucleus deploys the built components, the install step makes a
venv from the agent's wheel (pip, from a package index), the run step starts the agent
from that venv, and the agent stages its first model from the model component's signed
packages, registers and reports through IPC. It needs a Python package index (the one
scripts/bootstrap installs from) and is skipped, saying so, without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cloud import CloudSubscriber

from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.greengrass.component import ComponentOptions, build_components
from agent.tools.nucleus import EmulatedNucleus
from agent.tools.packaging.keys import keys_generate
from agent.wire.mqtt_config import MqttConfig

AGENT = "com.edgeinference.Agent"


def _index_reachable(tmp: Path) -> bool:
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                             "-d", str(tmp), "pyyaml"], capture_output=True, timeout=120,
                            check=False)
    return result.returncode == 0


def test_install_step_builds_the_venv_and_the_agent_serves(built_models: Path,
                                                           tmp_path: Path) -> None:
    if not _index_reachable(tmp_path / "probe"):
        pytest.skip("no Python package index reachable: the install step pip-installs "
                    "the agent's dependencies")
    keys = keys_generate(tmp_path / "keys", "ctl")
    build_components(ComponentOptions(models=built_models, key=keys.private, key_id="ctl",
                                      out=tmp_path / "components", model_versions=(1,)))
    with EmbeddedBroker() as broker:
        cloud = CloudSubscriber(host=broker.host, port=broker.port, topic="edge/+/+").start()
        nucleus = EmulatedNucleus.from_store(
            tmp_path / "components" / "greengrass-local", {AGENT: None},
            thing_name="fresh-1", provided={"variant.DLR"}, root_dir=tmp_path / "gg",
            socket_path=str(Path("/tmp") / f"gg-install-{tmp_path.name[-8:]}.sock"),
            broker=MqttConfig(host=broker.host, port=broker.port, client_id="fresh-1",
                              clean_session=True),
            config_overrides={AGENT: {"trustedKeys": {"ctl": keys.public.read_text()},
                                      "board": "rpi4_64", "rateHz": 20,
                                      "metricsIntervalSeconds": 0.5}})
        try:
            nucleus.start()
            nucleus.deploy(timeout_s=600)
            venv_python = nucleus.work_dir(AGENT) / "venv" / "bin" / "python"
            assert venv_python.is_file() and not (nucleus.work_dir(AGENT) / "venv").is_symlink()
            cloud.wait_for(lambda ms: any(m.type == "register" for m in ms), 120, "register")
            cloud.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= 2, 60, "metrics")
            register = cloud.of_type("register")[0]
            assert register.models == {"blue": "digits-v1"}
            assert register.profile.neo_target == "rasp4b"
            log = nucleus.log_path(AGENT).read_text()
            assert "installed in" in log and "installed the first model" in log, log[-3000:]
            nucleus.stop_components()
            states = [(s.state, s.detail) for s in nucleus.lifecycle_states(AGENT)]
            assert states[-1] == ("FINISHED", "exited 0 on SIGTERM"), states
        finally:
            nucleus.close()
            cloud.stop()
