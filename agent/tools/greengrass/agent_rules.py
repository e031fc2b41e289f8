"""What the agent component's recipe must say about the agent itself.

Its ``DefaultConfiguration`` (less ``accessControl``) is the agent's own settings: every
setting of :class:`~agent.device.app.config.AgentConfig` but ``thingName`` (each device gets
its own from ``AWS_IOT_THING_NAME``), each valid, also after Greengrass has turned integer
values into floats (it stores configuration as JSON numbers).

Its ``accessControl`` grants exactly the MQTT topics the agent uses, no more: the agent
publishes each up channel (every protocol message's channel and the extra ones such as
``emf``) and subscribes to its own commands and its groups' commands, all computed from
:mod:`agent.wire.topics` and :mod:`agent.wire.messages` with the configured
``topicPrefix``, scoped to the device by ``{iot:thingName}``; and, on Greengrass local
pub/sub (``aws.greengrass.ipc.pubsub``), ``PublishToTopic`` on exactly its result stream's
``results.localTopic``.

A recipe whose configuration uploads captures to S3 (``capture.upload.kind: s3``) must
depend on ``aws.greengrass.TokenExchangeService``: under Greengrass a component gets AWS
credentials only from it. A recipe may depend on it without that (``--s3-packages``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from agent.core.errors import ConfigError
from agent.device.app.config import AgentConfig, load_config
from agent.device.results.config import DEFAULT_LOCAL_TOPIC, THING_MARKS
from agent.tools.greengrass.access_policy import MQTT_PROXY, PUBSUB, PolicyBody
from agent.tools.greengrass.variable_check import key_path
from agent.wire.messages import UpMessage
from agent.wire.topics import DEFAULT_PREFIX, EXTRA_CHANNELS, Topics

PUBLISH = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"
PUBLISH_LOCAL = "aws.greengrass#PublishToTopic"
THING = "{iot:thingName}"
ACCESS_CONTROL = "accessControl"
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"
_BASE_KEYS: list[str | int] = ["ComponentConfiguration", "DefaultConfiguration"]
_BASE = key_path(_BASE_KEYS)
_THING_MARK = "thing-mark"  # a valid thing name, swapped for {iot:thingName}
_GROUP_MARK = "group-mark"  # a valid group name, swapped for the '+' wildcard

Found = list[tuple[str, str]]


def up_channels() -> tuple[str, ...]:
    """Every channel the agent publishes on: its messages' and the extra ones."""
    def walk(cls: type[UpMessage]) -> Iterator[type[UpMessage]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    channels = {getattr(cls, "channel", None) for cls in walk(UpMessage)}
    return tuple(sorted({c for c in channels if isinstance(c, str)} | set(EXTRA_CHANNELS)))


def agent_topics(prefix: str = DEFAULT_PREFIX) -> dict[str, frozenset[str]]:
    """The agent's topics as policy resources, by IPC operation."""
    topics = Topics(_THING_MARK, prefix)
    publish = {topics.up(channel) for channel in up_channels()}
    subscribe = {topics.commands, topics.group_commands(_GROUP_MARK)}
    return {op: frozenset(t.replace(_THING_MARK, THING).replace(_GROUP_MARK, "+") for t in found)
            for op, found in ((PUBLISH, publish), (SUBSCRIBE, subscribe))}


def _as_resource(topic: str) -> str:
    for mark in THING_MARKS:
        topic = topic.replace(mark, THING)
    return topic


def local_topics(local_topic: str = DEFAULT_LOCAL_TOPIC) -> dict[str, frozenset[str]]:
    """The agent's local pub/sub topics as policy resources, by IPC operation: its result
    stream's topic (``results.localTopic``)."""
    return {PUBLISH_LOCAL: frozenset({_as_resource(local_topic)})}


def setting_names() -> set[str]:
    """The camelCase names of every agent setting."""
    return {field.alias or name for name, field in AgentConfig.model_fields.items()}


def agent_problems(configuration: Mapping[str, Any],
                   dependencies: Collection[str] | None = None) -> Found:
    """Problems of the agent recipe's ``DefaultConfiguration``, as (key path, message);
    with the recipe's ``dependencies`` (names), also whether they give what it needs."""
    settings = {k: v for k, v in configuration.items() if k != ACCESS_CONTROL}
    found: Found = [] if dependencies is None else _credential_problems(settings,
                                                                        dependencies)
    if "thingName" in settings:
        found.append((f"{_BASE}.thingName", "must not be set: every device has its own, "
                                            "from AWS_IOT_THING_NAME"))
    missing = sorted(setting_names() - {"thingName"} - set(settings))
    if missing:
        found.append((_BASE, f"missing agent setting(s) {', '.join(missing)}: the recipe "
                             "lists every setting with its default"))
    prefix = settings.get("topicPrefix", DEFAULT_PREFIX)
    config: AgentConfig | None = None
    try:
        config = load_config({**settings, "thingName": _THING_MARK})
        prefix = config.topic_prefix
    except ConfigError as err:
        found += _config_problems(err, "")
    else:
        try:
            load_config({**_floats(settings), "thingName": _THING_MARK})
        except ConfigError as err:
            found += _config_problems(err, " once Greengrass stores its integers as floats")
    results = config.results if config is not None else None
    local = local_topics(results.local_topic if results is not None else DEFAULT_LOCAL_TOPIC)
    iot = results.iot_topic if results is not None else None
    return found + _access_problems(configuration.get(ACCESS_CONTROL), str(prefix), local,
                                    None if iot is None else _as_resource(iot))


def _credential_problems(settings: Mapping[str, Any], dependencies: Collection[str]) -> Found:
    capture = settings.get("capture")
    upload = capture.get("upload") if isinstance(capture, Mapping) else None
    if not isinstance(upload, Mapping) or upload.get("kind") != "s3" \
            or TOKEN_EXCHANGE in dependencies:
        return []
    return [("ComponentDependencies", f"capture.upload.kind is s3 but the recipe does not "
                                      f"depend on {TOKEN_EXCHANGE}: a component gets its AWS "
                                      "credentials only from it under Greengrass")]


def _floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _config_problems(err: ConfigError, when: str) -> Found:
    cause = err.__cause__
    if not isinstance(cause, ValidationError):
        return [(_BASE, f"{err}{when}")]
    return [(key_path([*_BASE_KEYS, *e["loc"]]), f"{e['msg']}{when}") for e in cause.errors()]


def _access_problems(access: Any, prefix: str, local: dict[str, frozenset[str]],
                     iot_results: str | None) -> Found:
    where = f"{_BASE}.{ACCESS_CONTROL}"
    if not isinstance(access, Mapping):
        return [(where, f"missing: the agent needs {MQTT_PROXY} grants")]
    try:
        mqtt = agent_topics(prefix)
    except ConfigError as err:
        return [(f"{_BASE}.topicPrefix", str(err))]
    if iot_results is not None:  # results.iotTopic replaces the default results topic
        default = Topics(_THING_MARK, prefix).results.replace(_THING_MARK, THING)
        mqtt = {**mqtt, PUBLISH: (mqtt[PUBLISH] - {default}) | {iot_results}}
    by_service = {MQTT_PROXY: mqtt, PUBSUB: local}
    found: Found = []
    granted: set[tuple[str, str]] = set()
    for service, policies in access.items():
        if service not in by_service:
            found.append((key_path([*_BASE_KEYS, ACCESS_CONTROL, service]),
                          f"too wide: the agent uses no {service}"))
            continue
        expected = by_service[service]
        for policy_id, raw in (policies.items() if isinstance(policies, Mapping) else ()):
            at = key_path([*_BASE_KEYS, ACCESS_CONTROL, service, policy_id])
            try:
                body = PolicyBody.model_validate(raw)
            except ValidationError as err:
                found.append((at, f"not a policy: {err.errors()[0]['msg']}"))
                continue
            for operation in body.operations:
                if operation not in expected:
                    found.append((f"{at}.operations", f"too wide: grants {operation}"))
                    continue
                for resource in body.resources:
                    topic = resource.replace("${iot:thingName}", THING)
                    if topic in expected[operation]:
                        granted.add((operation, topic))
                    else:
                        found.append((f"{at}.resources", f"too wide: grants {operation} on "
                                                         f"{resource}, a topic the agent "
                                                         "does not use"))
    found += [(where, f"missing grant: {operation} on {topic}")
              for expected in by_service.values()
              for operation, topics in sorted(expected.items()) for topic in sorted(topics)
              if (operation, topic) not in granted]
    return found
