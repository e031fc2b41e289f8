"""Envelope fields for the messages a device sends: its thing, the next seq, the time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.wire.messages import UpMessage
from agent.wire.sequence import SequenceCounter
from agent.wire.topics import check_name

U = TypeVar("U", bound=UpMessage)


class Stamper:
    """Builds up messages of one device: ``stamper.make(Heartbeat, uptime_s=..., ...)``."""

    def __init__(self, *, thing: str, counter: SequenceCounter,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.thing = check_name("thing name", thing)
        self._counter = counter
        self._wall_clock = wall_clock

    @property
    def boot_id(self) -> str:
        return self._counter.boot_id

    def make(self, cls: type[U], **fields: Any) -> U:
        """A ``cls`` message with ``thing``, the next ``seq`` and ``sent_at`` filled in."""
        sent_at = max(0, int(self._wall_clock() * 1000))  # informational: may be years off
        return cls(thing=self.thing, seq=self._counter.next(), sent_at=sent_at, **fields)
