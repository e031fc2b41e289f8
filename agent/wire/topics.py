"""Topic layout, shared by the device and the fleet controller.

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
    {prefix}/{thing}/commands     down  commands for one device
    {prefix}/groups/{group}/commands  down  commands for a device group

AWS IoT Core allows at most 7 slashes (8 levels) in a topic and reserves
topics starting with ``$``; the longest topic here has 4 levels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.core.errors import ConfigError

DEFAULT_PREFIX = "edge"
UP_CHANNELS = ("register", "heartbeat", "metrics", "events", "state", "ack")
EXTRA_CHANNELS = ("emf",)  # up topics that carry no protocol message
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

    def group_commands(self, group: str) -> str:
        return group_commands_topic(self.prefix, group)
