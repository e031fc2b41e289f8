"""Recipes and IPC authorization policies of the emulated nucleus."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.device.uplink.ipc import IpcTransport
from agent.tools.greengrass.access_policy import MQTT_PROXY, AccessPolicy, resource_pattern
from agent.tools.nucleus import NucleusError, Recipe, RecipeError
from agent.tools.nucleus.errors import IpcServiceError
from agent.tools.nucleus.policy import authorize
from agent.wire.transport import TransportError

RECIPE = REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml"
PUBLISH = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"


@pytest.mark.parametrize(("resource", "requested", "allowed"), [
    ("edge/{iot:thingName}/metrics", "edge/demo-1/metrics", True),
    ("edge/${iot:thingName}/metrics", "edge/demo-1/metrics", True),
    ("edge/{iot:thingName}/metrics", "edge/demo-2/metrics", False),
    ("edge/groups/+/commands", "edge/groups/lab/commands", True),
    ("edge/groups/+/commands", "edge/groups/+/commands", True),  # the filter itself
    ("edge/groups/+/commands", "edge/groups/a/b/commands", False),
    ("edge/groups/+/commands", "edge/groups/#", False),
    ("edge/#", "edge", True),
    ("edge/#", "edge/a/b", True),
    ("edge/#", "edges", False),
    ("edge/*", "edge/a/b", True),  # '*' crosses levels
    ("*", "anything/at/all", True),
    ("a+b", "a+b", True),  # '+' inside a level is a plain character
    ("a+b", "axb", False),
    ("a${*}b", "a*b", True),
    ("a${*}b", "axb", False),
])
def test_resource_matching(resource: str, requested: str, allowed: bool) -> None:
    assert bool(resource_pattern(resource, thing_name="demo-1").fullmatch(requested)) is allowed


def test_the_agent_recipe_grants_exactly_its_topics() -> None:
    recipe = Recipe.load(RECIPE)
    assert recipe.component_name == "com.edgeinference.Agent"
    config = recipe.default_configuration()
    assert {k: config[k] for k in ("topicPrefix", "metricsIntervalSeconds",
                                   "heartbeatIntervalSeconds", "backend")} == {
        "topicPrefix": "edge", "metricsIntervalSeconds": 10, "heartbeatIntervalSeconds": 30,
        "backend": "dlr"}
    policy = AccessPolicy.from_configuration(component=recipe.component_name,
                                             configuration=config, thing_name="pi-7")
    for channel in ("register", "heartbeat", "metrics", "events", "state", "ack"):
        authorize(policy, service=MQTT_PROXY, operation=PUBLISH, resource=f"edge/pi-7/{channel}")
    authorize(policy, service=MQTT_PROXY, operation=SUBSCRIBE, resource="edge/pi-7/commands")
    authorize(policy, service=MQTT_PROXY, operation=SUBSCRIBE, resource="edge/groups/+/commands")
    refused = [(PUBLISH, "edge/pi-7/commands"), (PUBLISH, "edge/pi-8/metrics"),
               (SUBSCRIBE, "edge/pi-7/metrics"), (SUBSCRIBE, "edge/#"),
               ("aws.greengrass#PublishToTopic", "edge/pi-7/metrics")]
    for operation, resource in refused:
        with pytest.raises(IpcServiceError) as caught:
            authorize(policy, service=MQTT_PROXY, operation=operation, resource=resource)
        assert caught.value.shape == "aws.greengrass#UnauthorizedError"
        assert caught.value.message == (
            f"Principal com.edgeinference.Agent is not authorized to perform "
            f"{MQTT_PROXY}:{operation} on resource {resource}")


@pytest.mark.parametrize("arch", ["amd64", "aarch64", "arm"])
def test_the_agent_recipe_runs_the_agent_on_linux(arch: str) -> None:
    step = Recipe.load(RECIPE).run_step(os="linux", architecture=arch)
    assert step is not None and step.script == (
        "exec {work:path}/venv/bin/python -m agent.cli serve "
        "--initial-package {com.edgeinference.Model.MODEL_NAME:artifacts:path}")
    assert step.setenv == {"PYTHONUNBUFFERED": "1"}


def test_bad_recipes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="ComponentName"):
        Recipe.parse({"RecipeFormatVersion": "2020-01-25"})
    with pytest.raises(RecipeError, match="Unknown"):
        Recipe.parse({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a",
                      "Unknown": 1})
    with pytest.raises(RecipeError, match="no manifest"):
        Recipe.load(RECIPE).manifest_for(os="windows", architecture="amd64")
    with pytest.raises(RecipeError, match="not valid YAML"):
        (tmp_path / "r.yaml").write_text("a: [")
        Recipe.load(tmp_path / "r.yaml")
    bad_policy = {"accessControl": {MQTT_PROXY: {"p:1": {"operations": [PUBLISH],
                                                         "resources": ["a/?"]}}}}
    with pytest.raises(RecipeError, match="'\\?' is not a wildcard"):
        AccessPolicy.from_configuration(component="a", configuration=bad_policy,
                                        thing_name="t")
    with pytest.raises(RecipeError, match="extra"):
        AccessPolicy.from_configuration(component="a", thing_name="t", configuration={
            "accessControl": {MQTT_PROXY: {"p:1": {"operations": [PUBLISH], "resource": []}}}})


def test_command_line_prints_the_environment_and_serves(tmp_path: Path) -> None:
    socket_path = f"/tmp/ggcli{os.getpid()}.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.tools.nucleus", "--recipe", str(RECIPE),
         "--thing", "cli-1", "--socket", socket_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO_ROOT)
    try:
        assert process.stdout is not None
        env: dict[str, str] = {}
        while len(env) < 5:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            match = re.fullmatch(r"export (\w+)=(\S+)\n", line)
            assert match, line
            env[match.group(1)] = match.group(2)
        assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == socket_path
        assert env["AWS_IOT_THING_NAME"] == "cli-1"
        transport = IpcTransport.from_environ(env)
        transport.connect(timeout_s=5)
        transport.publish("edge/cli-1/register", b"{}").result(5)  # loops back: no broker
        with pytest.raises(TransportError, match="not authorized"):
            transport.publish("edge/cli-2/register", b"{}").result(5)
        transport.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)  # also closes the pipes
    assert process.returncode == 0
    assert not os.path.exists(socket_path)


def test_overrides_must_name_known_components() -> None:
    from agent.tools.nucleus import EmulatedNucleus

    with pytest.raises(NucleusError, match="unknown components"):
        EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name="t",
                        config_overrides={"com.other": {}})
