"""Everything the agent sends goes through here: stamped, encoded, spooled.

The spool makes every message durable before ``send`` returns; the drainer
delivers it when the transport can. Nothing on this path waits for the network.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, TypeVar

from agent.core.errors import AgentError
from agent.device.uplink.spool import Priority, Spool, SpoolError
from agent.wire.codec import encode
from agent.wire.errors import StateFileError
from agent.wire.messages import Event, Metrics, UpMessage
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics

U = TypeVar("U", bound=UpMessage)
log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, *, stamper: Stamper, topics: Topics, spool: Spool) -> None:
        self.stamper = stamper
        self.topics = topics
        self.spool = spool
        self._lock = threading.Lock()  # seq order == spool order
        self.spool_errors = 0
        self._unreported = 0
        self.last_spool_error = ""
        self._last_code = "spool_full"
        self._last_logged = -60.0
        self._last_id: int | None = None

    def send(self, cls: type[U], **fields: Any) -> U | None:
        """Stamp, encode and spool one message; None if the spool refused it (disk full)."""
        return self._send(cls, fields)[0]

    def _send(self, cls: type[U], fields: dict[str, Any]) -> tuple[U | None, int | None]:
        priority = Priority.METRICS if cls is Metrics else Priority.CRITICAL
        with self._lock:
            try:
                message = self.stamper.make(cls, **fields)
            except StateFileError as err:
                # The sequence cannot be recorded (a read-only state directory): a number
                # handed out anyway could repeat after a restart, so the message is not
                # sent; counted, and reported once numbering works again.
                self._failed(err, "state_unwritable")
                return None, None
            if not self._put(self.topics.up(cls.channel), encode(message), priority):
                return None, None
            entry = self._last_id
            if self._unreported:
                self._report_spool_errors()
        return message, entry

    def send_raw(self, channel: str, payload: bytes) -> bool:
        """Spool a payload that is not a protocol message (EMF documents), as metrics."""
        with self._lock:
            return self._put(self.topics.up(channel), payload, Priority.METRICS)

    def _put(self, topic: str, payload: bytes, priority: Priority) -> bool:
        try:
            self._last_id = self.spool.put(topic, payload, qos=1, priority=priority)
        except SpoolError as err:
            # A full disk: counted, reported once the spool takes messages again; the
            # agent keeps serving meanwhile.
            self._failed(err, "spool_full")
            return False
        return True

    def _failed(self, err: AgentError, code: str) -> None:
        self.spool_errors += 1
        self._unreported += 1
        self.last_spool_error, self._last_code = str(err), code
        if time.monotonic() - self._last_logged >= 60.0:  # a message a second would flood
            self._last_logged = time.monotonic()
            log.warning("%s: %s (%d message(s) not stored so far)", type(err).__name__, err,
                        self.spool_errors)

    def _report_spool_errors(self) -> None:
        count, self._unreported = self._unreported, 0
        try:
            event = self.stamper.make(
                Event, kind="agent_error",
                detail=f"{count} message(s) could not be stored: {self.last_spool_error}"[:512],
                data={"code": self._last_code, "count": count})
        except StateFileError:
            self._unreported += count  # reported with the next message that is numbered
            return
        self._put(self.topics.up(Event.channel), encode(event), Priority.CRITICAL)

    def event(self, kind: str, detail: str, **fields: Any) -> Event | None:
        return self.send(Event, kind=kind, detail=detail, **fields)

    def event_entry(self, kind: str, detail: str, **fields: Any) -> int | None:
        """Send an event as :meth:`event` does; its spool entry id (None: not stored, or
        already dropped), so a caller can tell whether it is still waiting there."""
        return self._send(Event, {"kind": kind, "detail": detail, **fields})[1]
