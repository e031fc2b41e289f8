"""Everything the agent sends goes through here: stamped, encoded, spooled.

The spool makes every message durable before ``send`` returns; the drainer
delivers it when the transport can. Nothing on this path waits for the network.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from agent.protocol.codec import encode
from agent.protocol.messages import Event, Metrics, UpMessage
from agent.protocol.stamp import Stamper
from agent.protocol.topics import Topics
from agent.transport.spool import Priority, Spool, SpoolError

U = TypeVar("U", bound=UpMessage)


class Outbox:
    def __init__(self, *, stamper: Stamper, topics: Topics, spool: Spool) -> None:
        self.stamper = stamper
        self.topics = topics
        self.spool = spool
        self._lock = threading.Lock()  # seq order == spool order
        self.spool_errors = 0
        self.last_spool_error = ""

    def send(self, cls: type[U], **fields: Any) -> U | None:
        """Stamp, encode and spool one message; None if the spool refused it (disk full)."""
        priority = Priority.METRICS if cls is Metrics else Priority.CRITICAL
        with self._lock:
            message = self.stamper.make(cls, **fields)
            try:
                self.spool.put(self.topics.up(cls.channel), encode(message), qos=1,
                               priority=priority)
            except SpoolError as err:
                # Reported through metrics/heartbeat counters; the agent keeps serving.
                self.spool_errors += 1
                self.last_spool_error = str(err)
                return None
        return message

    def event(self, kind: str, detail: str, **fields: Any) -> Event | None:
        return self.send(Event, kind=kind, detail=detail, **fields)
