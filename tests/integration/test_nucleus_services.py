"""The emulated nucleus's IPC services, driven by the real Greengrass SDK client."""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import waits
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from paths import REPO_ROOT

from agent.tools.greengrass.recipe import host_platform
from agent.tools.nucleus import EmulatedNucleus, Recipe

RECIPE = REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml"
AGENT = "com.edgeinference.Agent"
T = 5.0  # seconds for any one answer


def wait_for(condition: Callable[[], Any], timeout_s: float = T) -> Any:
    return waits.wait_for(condition, timeout_s)


@contextlib.contextmanager
def raises_ipc(error: type[Exception], text: str) -> Iterator[None]:
    """An SDK error shape whose ``message`` (its str() is empty) contains ``text``."""
    with pytest.raises(error) as caught:
        yield
    assert text in str(getattr(caught.value, "message", "")), caught.value


def sdk_client(nucleus: EmulatedNucleus, component: str | None = None) -> Any:
    import awsiot.greengrasscoreipc as ggipc

    return GreengrassCoreIPCClientV2(client=ggipc.connect(
        ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid_for(component or AGENT),
        timeout=T))


@pytest.fixture()
def nucleus() -> Iterator[EmulatedNucleus]:
    with EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name="demo-1",
                         config_overrides={AGENT: {"thingGroups": ["lab"]}}) as running:
        yield running


@pytest.fixture()
def ipc(nucleus: EmulatedNucleus) -> Iterator[Any]:
    client = sdk_client(nucleus)
    yield client
    client.close(executor_wait=False)


def test_get_configuration_serves_the_default_configuration(ipc: Any) -> None:
    whole = ipc.get_configuration_async().result(T)
    assert whole.component_name == AGENT
    assert whole.value["metricsIntervalSeconds"] == 10
    assert whole.value["thingGroups"] == ["lab"]  # the override was merged
    policy = whole.value["accessControl"]["aws.greengrass.ipc.mqttproxy"]
    assert "edge/demo-1/metrics" in policy[f"{AGENT}:mqttproxy:1"]["resources"]
    leaf = ipc.get_configuration_async(key_path=["backend"]).result(T)
    assert leaf.value == {"backend": "dlr"}  # a leaf comes back under its own name
    with pytest.raises(model.ResourceNotFoundError):
        ipc.get_configuration_async(key_path=["nope"]).result(T)


def test_configuration_update_reaches_the_subscriber(nucleus: EmulatedNucleus,
                                                     ipc: Any) -> None:
    everything: list[list[str]] = []
    groups_only: list[list[str]] = []
    ipc.subscribe_to_configuration_update_async(
        on_stream_event=lambda e: everything.append(e.configuration_update_event.key_path)
    )[0].result(T)
    ipc.subscribe_to_configuration_update_async(
        key_path=["thingGroups"],
        on_stream_event=lambda e: groups_only.append(e.configuration_update_event.key_path),
    )[0].result(T)
    changed = nucleus.update_configuration({"metricsIntervalSeconds": 5,
                                            "backend": "dlr"})  # backend unchanged
    assert changed == [("metricsIntervalSeconds",)]
    wait_for(lambda: everything == [["metricsIntervalSeconds"]])
    nucleus.update_configuration({"thingGroups": ["lab", "canary"]})
    wait_for(lambda: groups_only == [["thingGroups"]] and len(everything) == 2)
    value = ipc.get_configuration_async(key_path=["metricsIntervalSeconds"]).result(T).value
    assert value == {"metricsIntervalSeconds": 5}


def test_update_configuration_from_the_component(ipc: Any, nucleus: EmulatedNucleus) -> None:
    now = datetime.datetime.now()
    ipc.update_configuration_async(key_path=[], timestamp=now,
                                   value_to_merge={"modelDir": "/data/models"}).result(T)
    assert nucleus.get_configuration(["modelDir"]) == "/data/models"
    with pytest.raises(model.InvalidArgumentsError):
        ipc.update_configuration_async(key_path=["accessControl"], timestamp=now,
                                       value_to_merge={"x": 1}).result(T)


def test_update_state_is_recorded(ipc: Any, nucleus: EmulatedNucleus) -> None:
    ipc.update_state_async(state="RUNNING").result(T)
    ipc.update_state_async(state="ERRORED").result(T)
    assert nucleus.states() == ["RUNNING", "ERRORED"]
    with pytest.raises(model.InvalidArgumentsError):
        ipc.update_state_async(state="SLEEPY").result(T)


def test_component_update_deferred_then_accepted(ipc: Any, nucleus: EmulatedNucleus) -> None:
    events: list[Any] = []
    answers = iter([300, 0])  # defer once for 300 ms, then let it go on

    def on_event(event: Any) -> None:
        events.append(event)
        if event.pre_update_event is not None:
            ipc.defer_component_update_async(
                deployment_id=event.pre_update_event.deployment_id, message="busy",
                recheck_after_ms=next(answers)).result(T)

    ipc.subscribe_to_component_updates_async(on_stream_event=on_event)[0].result(T)
    started = time.monotonic()
    update = nucleus.announce_component_update("dep-1", timeout_s=T)
    assert update.wait(T) == "accepted"
    assert time.monotonic() - started >= 0.3
    assert update.announcements == 2 and update.deferred
    assert [(d.component, d.recheck_after_ms, d.message) for d in update.deferrals] == [
        (AGENT, 300, "busy")]
    wait_for(lambda: len(events) == 3)
    assert [e.pre_update_event.deployment_id for e in events[:2]] == ["dep-1", "dep-1"]
    assert events[2].post_update_event.deployment_id == "dep-1"
    with raises_ipc(model.ServiceError, "Time limit"):  # nothing pending any more
        ipc.defer_component_update_async(deployment_id="dep-1",
                                         recheck_after_ms=0).result(T)


def test_component_update_without_subscribers_or_answers(ipc: Any,
                                                         nucleus: EmulatedNucleus) -> None:
    assert nucleus.announce_component_update(timeout_s=T).wait(T) == "no-subscribers"
    with raises_ipc(model.InvalidArgumentsError, "not subscribed"):
        ipc.defer_component_update_async(deployment_id="x", recheck_after_ms=1).result(T)
    ipc.subscribe_to_component_updates_async(on_stream_event=lambda e: None)[0].result(T)
    silent = nucleus.announce_component_update(timeout_s=0.2)
    assert silent.wait(T) == "timed-out" and not silent.deferred


def test_operations_the_emulation_lacks_are_service_errors(ipc: Any) -> None:
    with raises_ipc(model.ServiceError, "ListComponents is not supported"):
        ipc.list_components_async().result(T)


def test_iot_core_without_a_broker_loops_back(ipc: Any, nucleus: EmulatedNucleus) -> None:
    ipc.publish_to_iot_core_async(topic_name="edge/demo-1/metrics", qos="1",
                                  payload=b"m").result(T)
    assert nucleus.link.published == [("edge/demo-1/metrics", b"m")]  # type: ignore[attr-defined]
    with raises_ipc(model.InvalidArgumentsError, "QoS"):
        ipc.publish_to_iot_core_async(topic_name="edge/demo-1/metrics", qos="2",
                                      payload=b"m").result(T)


def test_closing_a_subscription_stops_its_events() -> None:
    open_recipe = Recipe.parse({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Open",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
            "aws.greengrass.ipc.mqttproxy": {"com.example.Open:mqttproxy:1": {
                "operations": ["*"], "resources": ["*"]}}}}}})
    with EmulatedNucleus(recipes=[open_recipe], thing_name="t1") as nucleus:
        client = sdk_client(nucleus, "com.example.Open")
        got: list[bytes] = []
        _response, operation = client.subscribe_to_iot_core_async(
            topic_name="t/#", qos="0", on_stream_event=lambda e: got.append(e.message.payload))
        _response.result(T)
        client.publish_to_iot_core_async(topic_name="t/a", qos="0", payload=b"1").result(T)
        wait_for(lambda: got == [b"1"])  # a broker echoes our own publish back
        operation.close().result(T)
        client.publish_to_iot_core_async(topic_name="t/a", qos="0", payload=b"2").result(T)
        time.sleep(0.2)
        assert got == [b"1"]
        client.close(executor_wait=False)


def test_local_pubsub_is_authorized_and_delivered(tmp_path: Path) -> None:
    recipe = Recipe.parse({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Local",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
            "aws.greengrass.ipc.pubsub": {"com.example.Local:pubsub:1": {
                "policyDescription": "local only",
                "operations": ["aws.greengrass#PublishToTopic",
                               "aws.greengrass#SubscribeToTopic"],
                "resources": ["local/{iot:thingName}/#"]}}}}}})
    with EmulatedNucleus(recipes=[recipe], thing_name="t1") as nucleus:
        client = sdk_client(nucleus, "com.example.Local")
        got: list[Any] = []
        client.subscribe_to_topic_async(topic="local/t1/+",
                                        on_stream_event=got.append)[0].result(T)
        client.publish_to_topic_async(topic="local/t1/a", publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"n": 1}))).result(T)
        client.publish_to_topic_async(topic="local/t1/b", publish_message=model.PublishMessage(
            binary_message=model.BinaryMessage(message=b"\x00\x01"))).result(T)
        wait_for(lambda: len(got) == 2)
        assert got[0].json_message.message == {"n": 1}
        assert got[0].json_message.context.topic == "local/t1/a"
        assert got[1].binary_message.message == b"\x00\x01"
        with raises_ipc(model.UnauthorizedError, "local/t2/a"):
            client.publish_to_topic_async(topic="local/t2/a", publish_message=model.PublishMessage(
                json_message=model.JsonMessage(message={}))).result(T)
        client.close(executor_wait=False)


def test_launched_component_gets_the_ipc_environment(nucleus: EmulatedNucleus) -> None:
    script = (
        "import os, awsiot.greengrasscoreipc as g\n"
        "from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2 as C\n"
        "c = C(client=g.connect(timeout=5))\n"  # socket and SVCUID from the environment
        "c.update_state_async(state='RUNNING').result(5)\n"
        "print(os.environ['AWS_IOT_THING_NAME'], os.environ['PYTHONUNBUFFERED'], os.getcwd())\n"
        "c.close()\n")
    process = nucleus.launch(argv=[sys.executable, "-c", script], stdout=-1)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    thing, unbuffered, cwd = out.decode().split()
    assert (thing, unbuffered, cwd) == ("demo-1", "1", str(nucleus.work_dir()))
    assert nucleus.states() == ["RUNNING"]


def test_nucleus_runs_inside_asyncio_too() -> None:
    import asyncio

    async def main() -> list[str]:
        async with EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name="a1") as nucleus:
            done = threading.Event()
            result: list[str] = []

            def component() -> None:
                client = sdk_client(nucleus)
                result.append(json.dumps(client.get_configuration_async(
                    key_path=["topicPrefix"]).result(T).value))
                client.close(executor_wait=False)
                done.set()

            threading.Thread(target=component).start()
            await asyncio.get_running_loop().run_in_executor(None, done.wait, T)
            return result

    assert asyncio.run(main()) == ['{"topicPrefix": "edge"}']


def test_launch_runs_the_recipe_run_step_with_its_variables() -> None:
    os_name, arch = host_platform()
    recipe = Recipe.parse({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Echo",
        "Manifests": [{"Platform": {"os": os_name, "architecture": arch}, "Lifecycle": {
            "Setenv": {"GREETING": "hi"},
            "run": 'echo "$GREETING {iot:thingName} {work:path} $AWS_IOT_THING_NAME"'}}]})
    with EmulatedNucleus(recipes=[recipe], thing_name="t9") as nucleus:
        process = nucleus.launch(stdout=-1)
        out, _ = process.communicate(timeout=10)
        work = nucleus.work_dir()
    assert out.decode().split() == ["hi", "t9", str(work), "t9"]
