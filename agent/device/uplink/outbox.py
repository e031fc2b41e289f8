"""Everything the agent sends goes through here: stamped, encoded, spooled.

The spool makes every message durable before ``send`` returns; the drainer
delivers it when the transport can. Nothing on this path waits for the network.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from agent.device.uplink.spool import Priority, Spool, SpoolError
from agent.wire.codec import encode
from agent.wire.messages import Event, Metrics, UpMessage
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics

U = TypeVar("U", bound=UpMessage)


class Outbox:
    def __init__(self, *, stamper: Stamper, topics: Topics, spool: Spool) -> None:
        self.stamper = stamper
        self.topics = topics
        self.spool = spool
        self._lock = threading.Lock()  # seq order == spool order
        self.spool_errors = 0
        self._unreported = 0
        self.last_spool_error = ""

    def send(self, cls: type[U], **fields: Any) -> U | None:
        """Stamp, encode and spool one message; None if the spool refused it (disk full)."""
        priority = Priority.METRICS if cls is Metrics else Priority.CRITICAL
        with self._lock:
            message = self.stamper.make(cls, **fields)
            if not self._put(self.topics.up(cls.channel), encode(message), priority):
                return None
            if self._unreported:
                self._report_spool_errors()
        return message

    def send_raw(self, channel: str, payload: bytes) -> bool:
        """Spool a payload that is not a protocol message (EMF documents), as metrics."""
        with self._lock:
            return self._put(self.topics.up(channel), payload, Priority.METRICS)

    def _put(self, topic: str, payload: bytes, priority: Priority) -> bool:
        try:
            self.spool.put(topic, payload, qos=1, priority=priority)
        except SpoolError as err:
            # A full disk: counted, reported once the spool takes messages again; the
            # agent keeps serving meanwhile.
            self.spool_errors += 1
            self._unreported += 1
            self.last_spool_error = str(err)
            return False
        return True

    def _report_spool_errors(self) -> None:
        count, self._unreported = self._unreported, 0
        event = self.stamper.make(
            Event, kind="agent_error",
            detail=f"{count} message(s) could not be stored: {self.last_spool_error}"[:512],
            data={"code": "spool_full", "count": count})
        self._put(self.topics.up(Event.channel), encode(event), Priority.CRITICAL)

    def event(self, kind: str, detail: str, **fields: Any) -> Event | None:
        return self.send(Event, kind=kind, detail=detail, **fields)
