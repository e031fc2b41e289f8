"""MQTT topics: the agent's topic layout, topic-filter matching, and filter validity.

This module is the one home for topics, shared by the device, the fleet controller,
the transports and the tools: it builds the topic strings of the layout below
(:class:`Topics`, :func:`group_commands_topic`, :func:`command_filters`), matches topics
against subscription filters (:func:`topic_matches`, used by the in-memory broker and
the MQTT transport's dispatch) and checks filters and topics for validity
(:func:`check_topic_filter`, :func:`is_valid_filter`, :func:`is_valid_topic`), and
reads the thing and channel back out of a device's topic (:func:`device_topic_parts`).

Everything lives under one configurable prefix (default ``edge``)::

    {prefix}/{thing}/register     up    device profile, groups, versions (on start)
    {prefix}/{thing}/heartbeat    up    presence (IPC has no MQTT last will)
    {prefix}/{thing}/metrics      up    periodic metrics report
    {prefix}/{thing}/events       up    guardrail breach, local rollback, rejected message
    {prefix}/{thing}/state        up    current model state (answers status requests too)
    {prefix}/{thing}/ack          up    command outcomes
    {prefix}/{thing}/emf          up    the metrics as CloudWatch Embedded Metric Format
                                        documents (optional), for an IoT rule that
                                        forwards them to CloudWatch Logs
    {prefix}/{thing}/results      up    prediction results (optional; the schema of
                                        :mod:`agent.wire.results`), for applications
    {prefix}/{thing}/commands     down  commands for one device
    {prefix}/groups/{group}/commands  down  commands for a device group

AWS IoT Core allows at most 7 slashes (8 levels) in a topic and reserves
topics starting with ``$``; the longest topic here has 4 levels.

Filters follow MQTT 3.1.1: ``+`` matches one level, ``#`` (only as the whole last
level) the level above and everything below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.core.errors import ConfigError

DEFAULT_PREFIX = "edge"
UP_CHANNELS = ("register", "heartbeat", "metrics", "events", "state", "ack")
EXTRA_CHANNELS = ("emf", "results")  # up topics that carry no protocol message
MAX_TOPIC_LEVELS = 8  # AWS IoT Core: at most 7 forward slashes
NAME_PATTERN = r"^[A-Za-z0-9_:.\-]{1,128}$"  # IoT thing-name characters
_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(f"{kind} {value!r} must be 1-128 of [A-Za-z0-9_:.-] (an IoT thing name)")
    return value


def group_commands_topic(prefix: str, group: str) -> str:
    """Where commands for every member of ``group`` go."""
    return f"{prefix}/groups/{check_name('group', group)}/commands"


def command_filters(prefix: str) -> tuple[str, str]:
    """The subscription filters that hear every command under ``prefix``: every device's
    own (``{prefix}/+/commands``) and every group's (``{prefix}/groups/+/commands``)."""
    return f"{prefix}/+/commands", f"{prefix}/groups/+/commands"


def device_topics_filter(prefix: str) -> str:
    """The subscription filter that hears every device's own topics under ``prefix``
    (``{prefix}/+/+``): each up channel, and the commands for one device."""
    return f"{prefix}/+/+"


def device_topic_parts(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(thing, channel)`` of a device's own topic ``{prefix}/{thing}/{channel}``; None
    for any other topic (another prefix, more or fewer levels, an empty level). The
    thing is returned as the topic spells it: it is not checked to be a valid name."""
    head = f"{prefix}/"
    if not topic.startswith(head):
        return None
    thing, sep, channel = topic[len(head):].partition("/")
    if not sep or not thing or not channel or "/" in channel:
        return None
    return thing, channel


@dataclass(frozen=True)
class Topics:
    """The concrete topics of one device."""

    thing: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_name("thing name", self.thing)
        if not self.prefix or self.prefix.startswith("$") or "#" in self.prefix \
                or "+" in self.prefix:
            raise ConfigError(f"topic prefix {self.prefix!r} is not a valid IoT topic prefix")
        if self.prefix.count("/") + 3 > MAX_TOPIC_LEVELS:
            raise ConfigError(f"topic prefix {self.prefix!r} is too deep for AWS IoT Core")

    def up(self, channel: str) -> str:
        if channel not in UP_CHANNELS and channel not in EXTRA_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        return f"{self.prefix}/{self.thing}/{channel}"

    @property
    def commands(self) -> str:
        return f"{self.prefix}/{self.thing}/commands"

    @property
    def results(self) -> str:
        """Where the device's prediction results go on AWS IoT Core (when published)."""
        return self.up("results")

    @property
    def own_filter(self) -> str:
        """The filter that hears every topic of this device (``{prefix}/{thing}/+``)."""
        return f"{self.prefix}/{self.thing}/+"

    def group_commands(self, group: str) -> str:
        return group_commands_topic(self.prefix, group)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` matches ``topic_filter`` under MQTT 3.1.1 rules.

    Wildcards never match topics starting with ``$`` at the first level, as the spec
    requires (so ``#`` does not see ``$SYS``).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def check_topic_filter(topic_filter: str) -> None:
    """Raise ValueError for a malformed filter (``#`` not last, wildcards inside a level)."""
    if not topic_filter:
        raise ValueError("empty topic filter")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level in {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {topic_filter!r}")


def is_valid_filter(topic_filter: str) -> bool:
    """True when ``topic_filter`` is a well-formed subscription filter."""
    try:
        check_topic_filter(topic_filter)
    except ValueError:
        return False
    return True


def is_valid_topic(topic: str) -> bool:
    """True when ``topic`` can be published to: not empty, no wildcard."""
    return bool(topic) and "+" not in topic and "#" not in topic
