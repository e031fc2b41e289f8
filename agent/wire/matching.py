"""MQTT topic-filter matching (``+`` one level, ``#`` the rest), shared by the
in-memory broker and the MQTT transport's message dispatch."""

from __future__ import annotations


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
