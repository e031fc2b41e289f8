"""The nucleus's IoT Core connection over the agent's own MQTT 3.1.1 transport.

:class:`~agent.tools.nucleus.iotcore.MqttBridge` speaks MQTT 5 in the clear, which
suits mosquitto. This link takes an :class:`~agent.wire.mqtt_config.MqttConfig`
instead, so the emulated nucleus can also reach a broker that speaks only MQTT 3.1.1
(the embedded amqtt broker) and AWS IoT Core itself with mutual TLS - a certificate,
its key and the Amazon root CA, as a real nucleus connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from agent.tools.nucleus.errors import service_error
from agent.tools.nucleus.iotcore import Deliver, broker_answer
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.transport import TransportError


class TransportBridge:
    """An IoT Core link (see ``IoTCoreLink``) over :class:`MqttTransport`."""

    def __init__(self, config: MqttConfig, *, ack_timeout_s: float = 10.0) -> None:
        self.config = config
        self.host, self.port = config.host, config.port
        self._ack_timeout_s = ack_timeout_s
        self._transport: MqttTransport | None = None
        self._active: set[str] = set()  # filters whose messages are delivered
        self._subscribed: set[str] = set()  # filters the transport holds
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_connected()

    def wait_connected(self, timeout_s: float) -> bool:
        transport = self._transport
        if transport is None:
            return False
        with contextlib.suppress(TransportError):
            transport.connect(timeout_s)
        return transport.is_connected()

    def start(self, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()

        def on_message(topic: str, payload: bytes) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(deliver, topic, payload)

        self._on_message = on_message
        self._transport = MqttTransport(config=self.config)

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await asyncio.get_running_loop().run_in_executor(None, transport.close)

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        what = f"Publish to topic {topic}"
        transport = self._transport
        if transport is None or not transport.is_connected():
            raise service_error(f"{what} failed: not connected to AWS IoT Core")
        await broker_answer(transport.publish(topic, payload, qos), what, self._ack_timeout_s,
                            errors=(TransportError,))

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        transport = self._transport
        if transport is None:
            raise service_error(f"Subscribe to topic {topic_filter} failed: not started")
        with self._lock:
            self._active.add(topic_filter)
            new = topic_filter not in self._subscribed
            self._subscribed.add(topic_filter)
        if not new:
            return

        def handler(topic: str, payload: bytes) -> None:
            with self._lock:
                active = topic_filter in self._active
            if active:
                self._on_message(topic, payload)

        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: transport.subscribe(topic_filter, handler, qos))
        except TransportError as err:
            with self._lock:
                self._active.discard(topic_filter)
                self._subscribed.discard(topic_filter)
            raise service_error(f"Subscribe to topic {topic_filter} failed: {err}") from err

    async def unsubscribe(self, topic_filter: str) -> None:
        # MqttTransport keeps its subscriptions; delivery for this filter stops here.
        with self._lock:
            self._active.discard(topic_filter)
