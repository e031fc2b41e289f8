"""An in-process broker and transport, for unit tests only.

:class:`MemoryBroker` matches ``+``/``#`` filters, and can fake what real networks
do to a QoS 1 publisher: an outage (``go_offline``/``go_online``: every client
disconnected, publishes fail), a PUBACK lost after delivery (``drop_next_acks``:
the subscriber got it, the publisher's future never completes, so a retry
duplicates it) and a publish lost before delivery (``lose_next_publishes``).
Handlers run on the publishing thread, after the broker's lock is released.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from agent.wire.topics import check_topic_filter, topic_matches
from agent.wire.transport import MessageHandler, TransportError


@dataclass(frozen=True)
class _Subscription:
    topic_filter: str
    handler: MessageHandler
    client: MemoryTransport


class MemoryBroker:
    def __init__(self, *, online: bool = True) -> None:
        self._lock = threading.Lock()
        self._online = online
        self._subscriptions: list[_Subscription] = []
        self._drop_acks = 0
        self._lose_publishes = 0
        self.delivered: list[tuple[str, bytes]] = []  # every message the broker accepted

    @property
    def online(self) -> bool:
        return self._online

    def go_offline(self) -> None:
        """Every client loses its connection; publishes fail until go_online()."""
        with self._lock:
            self._online = False

    def go_online(self) -> None:
        """Clients that asked to connect are connected again (sessions kept)."""
        with self._lock:
            self._online = True

    def drop_next_acks(self, count: int = 1) -> None:
        """Deliver the next ``count`` publishes but never confirm them to the publisher."""
        with self._lock:
            self._drop_acks += count

    def lose_next_publishes(self, count: int = 1) -> None:
        """Swallow the next ``count`` publishes: not delivered, never confirmed."""
        with self._lock:
            self._lose_publishes += count

    def _subscribe(self, subscription: _Subscription) -> None:
        with self._lock:
            self._subscriptions = [
                s for s in self._subscriptions
                if (s.client, s.topic_filter) != (subscription.client, subscription.topic_filter)]
            self._subscriptions.append(subscription)

    def _forget(self, client: MemoryTransport) -> None:
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.client is not client]

    def _publish(self, topic: str, payload: bytes) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            if not self._online:
                future.set_exception(TransportError("memory broker is offline"))
                return future
            if self._lose_publishes:
                self._lose_publishes -= 1
                return future
            confirm = not self._drop_acks
            if not confirm:
                self._drop_acks -= 1
            self.delivered.append((topic, payload))
            targets = [s.handler for s in self._subscriptions
                       if topic_matches(s.topic_filter, topic)]
        for handler in targets:
            handler(topic, payload)
        if confirm:
            future.set_result(None)
        return future


class MemoryTransport:
    """A client of a :class:`MemoryBroker`; implements the Transport protocol."""

    name = "memory"

    def __init__(self, *, broker: MemoryBroker, client_id: str = "memory") -> None:
        self.broker = broker
        self.client_id = client_id
        self._wants_connection = False
        self._closed = False

    def connect(self, timeout_s: float = 10.0) -> None:
        # Like the MQTT transport: an offline broker is not an error, the client keeps
        # "retrying" and is connected as soon as the broker is back.
        if self._closed:
            raise TransportError("transport is closed")
        self._wants_connection = True

    def is_connected(self) -> bool:
        return self._wants_connection and not self._closed and self.broker.online

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Future[None]:
        if not self.is_connected():
            failed: Future[None] = Future()
            failed.set_exception(TransportError(f"{self.client_id} is not connected"))
            return failed
        return self.broker._publish(topic, payload)

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        try:
            check_topic_filter(topic_filter)
        except ValueError as err:
            raise TransportError(f"subscription refused: {err}") from err
        self.broker._subscribe(_Subscription(topic_filter, handler, self))

    def close(self) -> None:
        self._closed = True
        self.broker._forget(self)
