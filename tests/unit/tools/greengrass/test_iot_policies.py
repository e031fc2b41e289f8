"""The IoT policies shipped for devices and the controller grant what the agent and the
controller use: every topic the agent publishes or subscribes to (from the protocol's
own topic layout, not a copied list), scoped to the connecting thing, and nothing else."""

from __future__ import annotations

import json
import re
from typing import Any

from paths import REPO_ROOT

from agent.tools.greengrass.agent_rules import agent_topics

POLICIES = REPO_ROOT / "recipes" / "iot"
PUBLISH = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"


def _grants(policy: dict[str, Any], action: str, thing: str) -> list[re.Pattern[str]]:
    """Resources an action is allowed on, as patterns (``*`` any characters; MQTT ``+``
    in a topic filter resource is literal), with the thing-name variable filled in."""
    out = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        if statement["Effect"] != "Allow" or action not in actions:
            continue
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        for resource in resources:
            text = resource.replace("${iot:Connection.Thing.ThingName}", thing)
            out.append(re.compile("^" + ".*".join(re.escape(p) for p in text.split("*")) + "$"))
    return out


def _allowed(policy: dict[str, Any], action: str, kind: str, name: str, thing: str) -> bool:
    arn = f"arn:aws:iot:REGION:ACCOUNT:{kind}/{name}"
    return any(p.match(arn) for p in _grants(policy, action, thing))


def test_device_policy_covers_exactly_the_agents_topics() -> None:
    policy = json.loads((POLICIES / "device-policy.json").read_text())
    topics = agent_topics()
    thing = "pi-kitchen-1"
    published = {t.replace("{iot:thingName}", thing) for t in topics[PUBLISH]}
    subscribed = {t.replace("{iot:thingName}", thing) for t in topics[SUBSCRIBE]}
    for topic in published:
        assert _allowed(policy, "iot:Publish", "topic", topic, thing), topic
    for topic_filter in subscribed:
        assert _allowed(policy, "iot:Subscribe", "topicfilter", topic_filter, thing)
    for topic in (f"edge/{thing}/commands", "edge/groups/kitchen/commands"):
        assert _allowed(policy, "iot:Receive", "topic", topic, thing), topic
    assert _allowed(policy, "iot:Connect", "client", thing, thing)
    # Nothing for another device, and no publishing of commands.
    assert not _allowed(policy, "iot:Publish", "topic", "edge/pi-kitchen-2/metrics", thing)
    assert not _allowed(policy, "iot:Publish", "topic", f"edge/{thing}/commands", thing)
    assert not _allowed(policy, "iot:Connect", "client", "pi-kitchen-2", thing)
    granted = [p for s in policy["Statement"] for p in (
        s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
    assert len(granted) == len(published) + 2 * len(subscribed) + 1  # exactly these


def test_controller_policy_reads_reports_and_sends_commands() -> None:
    policy = json.loads((POLICIES / "controller-policy.json").read_text())
    me = "edge-fleet-controller"
    assert _allowed(policy, "iot:Subscribe", "topicfilter", "edge/+/+", me)
    assert _allowed(policy, "iot:Receive", "topic", "edge/pi-1/metrics", me)
    assert _allowed(policy, "iot:Publish", "topic", "edge/pi-1/commands", me)
    assert _allowed(policy, "iot:Publish", "topic", "edge/groups/kitchen/commands", me)
    assert not _allowed(policy, "iot:Publish", "topic", "edge/pi-1/metrics", me)
