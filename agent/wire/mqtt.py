"""Direct MQTT 3.1.1 to AWS IoT Core or a local broker, over awscrt.

QoS 1 throughout: ``publish`` futures complete on PUBACK.

Reconnection is this transport's own, one fresh awscrt connection per attempt,
with backoff from ``reconnect_min_s`` doubling to ``reconnect_max_s``. awscrt's
built-in reconnect is not used, for two measured reasons: it never retries a
*first* connection that failed (an agent booting without network would stay
offline), and after a reconnect it resends the publishes it still held
unacknowledged in an order of its own (we saw 602, 603, 605, 606, 604), which
breaks in-order delivery from the spool. So when a connection drops, every
publish still waiting for its PUBACK fails at once with TransportError, the old
connection is discarded with whatever it held, and the spool drainer resends
from its oldest unconfirmed entry over the next connection. The broker session
survives (``clean_session=False``, same client id); subscriptions it forgot
(``session_present`` false) are sent again.

``connect`` returns when connected or after its timeout with the retries going
on in the background; it raises only for what retrying cannot fix: missing
certificate files, a TLS handshake the broker or this client rejected, a CONNACK
refusing the client (and then stops retrying; once a connection has succeeded,
every later failure is retried). Publishing while disconnected fails at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from agent.wire.mqtt_config import MqttConfig, build_connection
from agent.wire.topics import check_topic_filter, topic_matches
from agent.wire.transport import MessageHandler, TransportConfigError, TransportError

log = logging.getLogger(__name__)

# CONNACK codes that no retry can change (1 protocol version, 2 identifier rejected,
# 4 bad user name or password, 5 not authorized); 3 (server unavailable) is transient.
_REFUSALS = {1, 2, 4, 5}


@dataclass(frozen=True)
class _Subscription:
    handler: MessageHandler
    qos: int


def is_permanent(error: BaseException) -> bool:
    """True for connection errors a retry cannot fix: TLS rejections, CONNACK refusals."""
    name = getattr(error, "name", "")
    if isinstance(name, str) and name.startswith("AWS_IO_TLS"):
        return True
    code = error.args[0] if error.args else None
    return getattr(code, "value", None) in _REFUSALS


class MqttTransport:
    """Implements the Transport protocol over awscrt MQTT 3.1.1 connections."""

    name = "mqtt"

    def __init__(self, *, config: MqttConfig) -> None:
        config.check_files()
        self.config = config
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._closed = threading.Event()
        self._first_outcome = threading.Event()
        self._permanent_error: TransportError | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._subscribed: set[str] = set()  # filters the broker holds in this session
        self._connection: Any = None  # the current awscrt connection
        self._unconfirmed: set[Future[None]] = set()  # publishes awaiting PUBACK on it
        self._connector: threading.Thread | None = None
        self.last_error: str | None = None
        self.connections = 0  # successful connections so far

    def connect(self, timeout_s: float = 10.0) -> None:
        """Start connecting; return when connected or after ``timeout_s`` with a thread
        still trying. Raise TransportError if the broker or TLS rejected this client."""
        if self._closed.is_set():
            raise TransportError("mqtt transport is closed")
        with self._lock:
            if self._connector is None:
                build_connection(self.config, callbacks={})  # config errors raise here
                self._connector = threading.Thread(
                    target=self._keep_connected, name="mqtt-connect", daemon=True)
                self._connector.start()
        self._first_outcome.wait(timeout_s)
        if self._permanent_error is not None:
            raise self._permanent_error
        if not self._connected.is_set():
            log.warning("mqtt %s:%s not reachable yet (%s); still trying", self.config.host,
                        self.config.effective_port, self.last_error or "no answer yet")

    def _keep_connected(self) -> None:
        delay = float(self.config.reconnect_min_s)
        while not self._closed.is_set():
            outcome = self._one_connection()
            if outcome == "permanent":
                return
            if outcome == "lost":
                delay = float(self.config.reconnect_min_s)  # it worked: start over
                continue  # reconnect at once after a drop; back off if that fails
            self._closed.wait(delay)
            delay = min(delay * 2, float(self.config.reconnect_max_s))

    def _one_connection(self) -> str:
        """Connect once and hold the connection until it drops.
        Returns 'lost', 'failed' (retry later), 'permanent' or 'closed'."""
        try:
            connection = build_connection(self.config, callbacks={
                "on_connection_success": self._on_success,
                "on_connection_interrupted": self._on_interrupted,
            })
        except TransportConfigError as err:  # e.g. a certificate file removed meanwhile
            self.last_error = str(err)
            log.error("mqtt: %s", err)
            return "failed"
        connection.on_message(self._on_message)
        self._lost.clear()
        with self._lock:
            self._connection = connection
        attempt = connection.connect()
        while not attempt.done() and not self._closed.is_set():
            self._closed.wait(0.1)
        if self._closed.is_set():
            self._drop(connection, "transport closed")
            return "closed"
        try:
            attempt.result()
        except Exception as err:  # awscrt raises several types
            self.last_error = str(err)
            self._drop(connection, "connection failed")
            # Only before the first success: a TLS failure on a link that has worked
            # is more likely the network than the certificate, so keep retrying then.
            if is_permanent(err) and not self.connections:
                log.error("mqtt %s:%s rejected this client: %s", self.config.host,
                          self.config.effective_port, err)
                self._permanent_error = TransportConfigError(
                    f"mqtt {self.config.host}:{self.config.effective_port} rejected the "
                    f"connection: {err}")
            self._first_outcome.set()  # after _permanent_error: connect() reads it next
            return "failed" if self._permanent_error is None else "permanent"
        while not self._lost.is_set() and not self._closed.is_set():
            self._lost.wait(0.25)
        self._drop(connection, "connection lost before PUBACK")
        return "closed" if self._closed.is_set() else "lost"

    def _drop(self, connection: Any, reason: str) -> None:
        """Forget ``connection``: fail what it still owed, stop it from reconnecting."""
        self._connected.clear()
        with self._lock:
            owed, self._unconfirmed = self._unconfirmed, set()
            if self._connection is connection:
                self._connection = None
        for future in owed:
            if not future.done():
                future.set_exception(TransportError(f"mqtt {reason} ({self.last_error})"))
        try:
            connection.disconnect()
        except Exception as err:  # never connected, or already gone
            log.debug("mqtt disconnect: %s", err)

    def is_connected(self) -> bool:
        return self._connected.is_set() and not self._closed.is_set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Future[None]:
        result: Future[None] = Future()
        from awscrt import mqtt

        with self._lock:
            connection = self._connection if self._connected.is_set() else None
            if connection is not None:
                self._unconfirmed.add(result)
        if connection is None or self._closed.is_set():
            result.set_exception(TransportError(f"mqtt not connected ({self.last_error})"))
            return result
        try:
            crt_future, _packet_id = connection.publish(topic, payload, mqtt.QoS(qos))
        except Exception as err:
            self._settle(result, TransportError(f"mqtt publish to {topic} failed: {err}"))
            return result

        def done(crt: Future[Any]) -> None:
            error = crt.exception()
            self._settle(result, None if error is None else TransportError(
                f"mqtt publish to {topic} failed: {error}"))

        crt_future.add_done_callback(done)
        return result

    def _settle(self, result: Future[None], error: TransportError | None) -> None:
        with self._lock:
            self._unconfirmed.discard(result)
        if result.done():  # already failed by a connection drop
            return
        if error is None:
            result.set_result(None)
        else:
            result.set_exception(error)

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe now if connected (raising if the broker refuses), else at connect."""
        try:
            check_topic_filter(topic_filter)
        except ValueError as err:
            raise TransportError(f"mqtt subscription refused: {err}") from err
        with self._lock:
            self._subscriptions[topic_filter] = _Subscription(handler, qos)
            self._subscribed.discard(topic_filter)
            connection = self._connection if self._connected.is_set() else None
        if connection is None:
            return
        future = self._send_subscribe(connection, topic_filter, qos)
        try:
            future.result(self.config.operation_timeout_s)
        except TimeoutError:
            log.warning("mqtt subscribe %s unanswered; sent again on reconnect", topic_filter)
        except Exception as err:
            if type(err).__name__ == "SubscribeError":
                with self._lock:
                    self._subscriptions.pop(topic_filter, None)
                raise TransportError(f"mqtt broker refused subscription {topic_filter}") from err
            log.warning("mqtt subscribe %s failed (%s); sent again on reconnect",
                        topic_filter, err)

    def _send_subscribe(self, connection: Any, topic_filter: str, qos: int) -> Future[Any]:
        from awscrt import mqtt

        future: Future[Any]
        future, _packet_id = connection.subscribe(topic_filter, mqtt.QoS(qos))

        def done(crt: Future[Any]) -> None:
            if crt.exception() is None:
                with self._lock:
                    if self._connection is connection:
                        self._subscribed.add(topic_filter)

        future.add_done_callback(done)
        return future

    def _on_success(self, connection: Any, callback_data: Any) -> None:
        session_present = bool(getattr(callback_data, "session_present", False))
        with self._lock:
            if connection is not self._connection:
                return
            if not session_present:
                self._subscribed.clear()  # the broker forgot them: subscribe again
            missing = [(f, s.qos) for f, s in self._subscriptions.items()
                       if f not in self._subscribed]
        self.last_error = None
        self.connections += 1
        self._connected.set()
        self._first_outcome.set()
        for topic_filter, qos in missing:
            self._send_subscribe(connection, topic_filter, qos)  # never wait on awscrt's thread

    def _on_interrupted(self, connection: Any, error: Exception, **_kwargs: Any) -> None:
        if connection is self._connection:
            self.last_error = str(error)
            self._connected.clear()
            self._lost.set()
            log.info("mqtt connection interrupted: %s", error)

    def _on_message(self, topic: str, payload: bytes, **_kwargs: Any) -> None:
        with self._lock:
            handlers = [s.handler for f, s in self._subscriptions.items()
                        if topic_matches(f, topic)]
        for handler in handlers:
            try:
                handler(topic, bytes(payload))
            except Exception:
                log.exception("mqtt handler for %s raised", topic)

    def close(self) -> None:
        """Disconnect and stop retrying; unconfirmed publishes fail."""
        self._closed.set()
        self._lost.set()
        if self._connector is not None:
            self._connector.join(timeout=5.0)
        with self._lock:
            connection = self._connection
        if connection is not None:
            self._drop(connection, "transport closed")
