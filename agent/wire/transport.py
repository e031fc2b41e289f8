"""The small interface every transport implements.

Transports move bytes; they know nothing of message schemas. ``publish``
returns a future that completes only when the far side confirmed the message
(a PUBACK for MQTT QoS 1, a successful PublishToIoTCore response under IPC),
which is what lets the spool delete an entry. Incoming messages are handed to
the subscriber's callback on the transport's own thread; callbacks must be
quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from agent.core.errors import AgentError

MessageHandler = Callable[[str, bytes], None]  # (topic, payload)


class TransportError(AgentError):
    """A transport could not connect, publish or subscribe."""


class TransportConfigError(TransportError):
    """A transport is misconfigured (missing certificate file, bad option): retrying
    cannot help."""


class Transport(Protocol):
    name: str

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (or start connecting and keep retrying); raise TransportError on a
        configuration error such as a bad certificate or an unreachable socket path."""
        ...

    def is_connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Future[None]:
        """Send; the future completes when the far side confirmed, or fails with
        TransportError."""
        ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe (again after every reconnect); raise TransportError if refused."""
        ...

    def close(self) -> None: ...
