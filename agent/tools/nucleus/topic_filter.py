"""MQTT topic filters: validity (matching is :func:`agent.wire.matching.topic_matches`)."""

from __future__ import annotations

from agent.wire.matching import check_topic_filter


def is_valid_filter(topic_filter: str) -> bool:
    try:
        check_topic_filter(topic_filter)
    except ValueError:
        return False
    return True


def is_valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic
