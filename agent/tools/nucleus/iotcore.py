"""PublishToIoTCore and SubscribeToIoTCore, bridged to a real MQTT broker that plays
AWS IoT Core (the nucleus's own MQTT connection, client id = thing name).

The bridge uses the AWS CRT MQTT5 client - the library the real device SDK uses - over
plain TCP. A QoS 1 PublishToIoTCore is answered only once the broker's PUBACK arrived,
so a component's "sent" means "the broker has it". (A real nucleus answers once the
message is in its own spooler.) Without a broker, :class:`LoopbackIoTCore` stands in:
publishes come back to matching subscriptions, as a broker would echo them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.tools.greengrass.access_policy import MQTT_PROXY, AccessPolicy
from agent.tools.nucleus.errors import IpcServiceError, invalid_arguments, service_error
from agent.tools.nucleus.operations import Body, Operation, Stream
from agent.tools.nucleus.policy import authorize
from agent.wire.topics import is_valid_filter, is_valid_topic, topic_matches

log = logging.getLogger(__name__)
_OP = "aws.greengrass#"
Deliver = Callable[[str, bytes], None]  # (topic, payload), called on the nucleus loop


class IoTCoreLink(Protocol):
    @property
    def connected(self) -> bool: ...
    def start(self, deliver: Deliver) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, topic: str, payload: bytes, qos: int) -> None: ...
    async def subscribe(self, topic_filter: str, qos: int) -> None: ...
    async def unsubscribe(self, topic_filter: str) -> None: ...


@dataclass
class LoopbackIoTCore:
    """No broker: what is published is recorded and echoed to matching subscriptions."""

    published: list[tuple[str, bytes]] = field(default_factory=list)
    _deliver: Deliver | None = None

    @property
    def connected(self) -> bool:
        return self._deliver is not None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        if self._deliver is None:
            raise service_error(f"Publish to topic {topic} failed: not connected")
        self.published.append((topic, payload))
        asyncio.get_running_loop().call_soon(self._deliver, topic, payload)

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        return None

    async def unsubscribe(self, topic_filter: str) -> None:
        return None


async def broker_answer(future: concurrent.futures.Future[Any], what: str, timeout_s: float,
                        *, errors: tuple[type[Exception], ...]) -> Any:
    """The broker's answer to ``what``; an IPC ServiceError when it fails with one of
    ``errors`` or does not come within ``timeout_s``."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except asyncio.TimeoutError as err:
        raise service_error(f"{what} failed: no answer from the broker "
                            f"within {timeout_s:g} s") from err
    except errors as err:
        raise service_error(f"{what} failed: {err}") from err


class MqttBridge:
    """The nucleus's MQTT connection to the broker, reconnecting on its own."""

    def __init__(self, *, host: str, port: int, client_id: str, ack_timeout_s: float = 10.0):
        self.host, self.port, self.client_id = host, port, client_id
        self._ack_timeout_s = ack_timeout_s
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}  # re-subscribed after every reconnect
        self._client: Any = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def start(self, deliver: Deliver) -> None:
        from awscrt import mqtt5

        loop = asyncio.get_running_loop()
        stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stopped = stopped

        def on_publish(data: Any) -> None:
            packet = data.publish_packet
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(deliver, packet.topic, bytes(packet.payload or b""))

        def on_connected(_data: Any) -> None:
            self._connected.set()
            with self._lock:
                filters = dict(self._filters)
            for topic_filter, qos in filters.items():
                client.subscribe(mqtt5.SubscribePacket(
                    subscriptions=[mqtt5.Subscription(topic_filter=topic_filter,
                                                      qos=mqtt5.QoS(qos))]))

        def on_down(_data: Any) -> None:
            self._connected.clear()

        def on_stopped(_data: Any) -> None:
            self._connected.clear()
            if not stopped.done():
                stopped.set_result(None)

        client = mqtt5.Client(mqtt5.ClientOptions(
            host_name=self.host, port=self.port,
            connect_options=mqtt5.ConnectPacket(client_id=self.client_id,
                                                keep_alive_interval_sec=30),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            min_reconnect_delay_ms=100, max_reconnect_delay_ms=2000,
            ack_timeout_sec=max(1, int(self._ack_timeout_s)), disable_metrics=True,
            on_publish_callback_fn=on_publish,
            on_lifecycle_event_connection_success_fn=on_connected,
            on_lifecycle_event_connection_failure_fn=on_down,
            on_lifecycle_event_disconnection_fn=on_down,
            on_lifecycle_event_stopped_fn=on_stopped))
        self._client = client
        client.start()

    async def stop(self) -> None:
        if self._client is None:
            return
        self._client.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(self._stopped), 5.0)
        self._client = None

    async def _await(self, future: concurrent.futures.Future[Any], what: str) -> Any:
        # awscrt raises its own AwsCrtError
        return await broker_answer(future, what, self._ack_timeout_s, errors=(Exception,))

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        from awscrt import mqtt5

        what = f"Publish to topic {topic}"
        if self._client is None or not self.connected:
            raise service_error(f"{what} failed: not connected to AWS IoT Core")
        result = await self._await(self._client.publish(mqtt5.PublishPacket(
            topic=topic, payload=payload, qos=mqtt5.QoS(qos))), what)
        puback = getattr(result, "puback", None)
        code = getattr(puback, "reason_code", 0) or 0
        if code >= 0x80:
            raise service_error(f"{what} failed: PUBACK reason code {int(code)}")

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        from awscrt import mqtt5

        with self._lock:
            self._filters[topic_filter] = qos
        if self._client is None or not self.connected:
            return  # made as soon as the connection is up
        what = f"Subscribe to topic {topic_filter}"
        suback = await self._await(self._client.subscribe(mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic_filter,
                                              qos=mqtt5.QoS(qos))])), what)
        codes = [int(c) for c in (suback.reason_codes or [])]
        if any(c >= 0x80 for c in codes):
            with self._lock:
                self._filters.pop(topic_filter, None)
            raise service_error(f"{what} failed: SUBACK reason codes {codes}")

    async def unsubscribe(self, topic_filter: str) -> None:
        from awscrt import mqtt5

        with self._lock:
            self._filters.pop(topic_filter, None)
        if self._client is not None and self.connected:
            with contextlib.suppress(IpcServiceError):
                await self._await(self._client.unsubscribe(mqtt5.UnsubscribePacket(
                    topic_filters=[topic_filter])), f"Unsubscribe from {topic_filter}")


def _qos(request: Body) -> int:
    qos = request.get("qos")
    if qos is None:
        raise invalid_arguments("QoS is required")
    if qos not in ("0", "1"):
        raise invalid_arguments(f"Invalid QoS value: {qos}")
    return int(qos)


@dataclass(frozen=True, eq=False)
class _Subscription:
    topic_filter: str
    stream: Stream


class IoTCoreProxy:
    """The mqttproxy IPC service. Loop thread only."""

    def __init__(self, *, link: IoTCoreLink, policy_for: Callable[[str], AccessPolicy]):
        self.link = link
        self._policy_for = policy_for
        self._subscriptions: list[_Subscription] = []  # answered, so events may flow
        self._refs: dict[str, int] = {}  # IPC subscriptions per broker subscription
        self._tasks: set[asyncio.Task[None]] = set()
        self.relayed: dict[str, int] = {}  # topic -> publishes that reached IoT Core

    def deliver(self, topic: str, payload: bytes) -> None:
        body = {"message": {"topicName": topic,
                            "payload": base64.b64encode(payload).decode()}}
        for sub in list(self._subscriptions):
            if topic_matches(sub.topic_filter, topic):
                sub.stream.send_event(f"{_OP}IoTCoreMessage", body)

    def _authorize(self, stream: Stream, request: Body) -> str:
        topic = request.get("topicName")
        if topic is None:
            raise invalid_arguments("Topic is required")
        if not isinstance(topic, str):
            raise invalid_arguments(f"invalid topic {topic!r}")
        authorize(self._policy_for(stream.component),
                  service=MQTT_PROXY, operation=stream.operation, resource=topic)
        return topic

    def operations(self) -> list[Operation]:
        async def publish(stream: Stream, request: Body) -> Body:
            topic = self._authorize(stream, request)
            if not is_valid_topic(topic):
                raise invalid_arguments(f"cannot publish to topic filter {topic!r}")
            if request.get("payload") is None:
                raise invalid_arguments("Payload is required")
            try:
                payload = base64.b64decode(request["payload"], validate=True)
            except (binascii.Error, TypeError) as err:
                raise invalid_arguments(f"payload is not base64: {err}") from err
            await self.link.publish(topic, payload, _qos(request))
            self.relayed[topic] = self.relayed.get(topic, 0) + 1
            return {}

        async def subscribe(stream: Stream, request: Body) -> Body:
            topic_filter = self._authorize(stream, request)
            if not is_valid_filter(topic_filter):
                raise invalid_arguments(f"invalid topic filter {topic_filter!r}")
            qos = _qos(request)
            sub = _Subscription(topic_filter, stream)
            self._refs[topic_filter] = self._refs.get(topic_filter, 0) + 1
            stream.on_close(lambda: self._drop(sub))
            await self.link.subscribe(topic_filter, qos)
            stream.after_response(lambda: self._subscriptions.append(sub))
            return {}

        return [Operation(f"{_OP}PublishToIoTCore", publish),
                Operation(f"{_OP}SubscribeToIoTCore", subscribe, streaming=True)]

    async def settle(self) -> None:
        """Wait for the broker unsubscribes that closed streams started."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _drop(self, sub: _Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        self._refs[sub.topic_filter] -= 1
        if self._refs[sub.topic_filter] > 0:
            return
        del self._refs[sub.topic_filter]
        task = asyncio.get_running_loop().create_task(self.link.unsubscribe(sub.topic_filter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
