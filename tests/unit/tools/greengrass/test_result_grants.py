"""The agent recipe grants local pub/sub on exactly its result topic, and the recipe rules
hold it to that (the nucleus then refuses any other topic: tests/integration/
test_result_streams.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from paths import REPO_ROOT

from agent.tools.greengrass.access_policy import (
    MQTT_PROXY,
    PUBSUB,
    AccessDeniedError,
    AccessPolicy,
)
from agent.tools.greengrass.agent_rules import PUBLISH_LOCAL, agent_problems, local_topics
from agent.tools.greengrass.recipe import Recipe

RECIPE = Recipe.load(REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml")
POLICY_ID = "com.edgeinference.Agent:pubsub:1"


def defaults() -> dict[str, Any]:
    return copy.deepcopy(dict(RECIPE.default_configuration()))


def access_problems(configuration: dict[str, Any]) -> list[str]:
    return [f"{where}: {what}" for where, what in agent_problems(configuration)
            if "accessControl" in where or "grant" in what]


def test_the_recipe_grants_publishing_on_exactly_the_result_topic() -> None:
    policy = AccessPolicy.from_configuration(component=RECIPE.component_name,
                                             configuration=RECIPE.default_configuration(),
                                             thing_name="cam-1")
    policy.check(service=PUBSUB, operation=PUBLISH_LOCAL, resource="edge/cam-1/results")
    policy.check(service=MQTT_PROXY, operation="aws.greengrass#PublishToIoTCore",
                 resource="edge/cam-1/results")
    for operation, resource in [(PUBLISH_LOCAL, "edge/cam-2/results"),
                                (PUBLISH_LOCAL, "edge/cam-1/results/more"),
                                (PUBLISH_LOCAL, "ml/dlr/image-classification"),
                                ("aws.greengrass#SubscribeToTopic", "edge/cam-1/results")]:
        with pytest.raises(AccessDeniedError, match="not authorized"):
            policy.check(service=PUBSUB, operation=operation, resource=resource)
    assert access_problems(defaults()) == []


def test_a_wider_or_missing_grant_is_named() -> None:
    wide = defaults()
    wide["accessControl"][PUBSUB][POLICY_ID]["resources"].append("edge/#")
    assert access_problems(wide) == [
        f'ComponentConfiguration.DefaultConfiguration.accessControl["{PUBSUB}"]["{POLICY_ID}"]'
        f'.resources: too wide: grants {PUBLISH_LOCAL} on edge/#, a topic the agent does not '
        "use"]
    missing = defaults()
    del missing["accessControl"][PUBSUB]
    assert access_problems(missing) == [
        "ComponentConfiguration.DefaultConfiguration.accessControl: missing grant: "
        f"{PUBLISH_LOCAL} on edge/{{iot:thingName}}/results"]


def test_another_result_topic_needs_its_own_grant() -> None:
    moved = defaults()
    moved["results"]["localTopic"] = "ml/dlr/image-classification"
    moved["results"]["iotTopic"] = "apps/{thing}/predictions"
    found = access_problems(moved)
    assert any(f"missing grant: {PUBLISH_LOCAL} on ml/dlr/image-classification" in m
               for m in found)
    assert any("missing grant: aws.greengrass#PublishToIoTCore on apps/{iot:thingName}/"
               "predictions" in m for m in found)
    moved["accessControl"][PUBSUB][POLICY_ID]["resources"] = ["ml/dlr/image-classification"]
    iot = moved["accessControl"][MQTT_PROXY]["com.edgeinference.Agent:mqttproxy:1"]
    iot["resources"] = [r.replace("edge/{iot:thingName}/results",
                                  "apps/{iot:thingName}/predictions") for r in iot["resources"]]
    assert access_problems(moved) == []
    assert local_topics("a/{thing}/b") == {PUBLISH_LOCAL: frozenset({"a/{iot:thingName}/b"})}
