"""The cloud side of the agent tests: a persistent-session QoS 1 subscriber that decodes
and validates every message with the protocol's own schemas, and a command sender."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from agent.wire.codec import decode, encode
from agent.wire.commands import Command
from agent.wire.messages import UpMessage
from agent.wire.signing import Signer


@dataclass
class CloudSubscriber:
    """Subscribes to ``topic`` on ``host:port``; keeps every message it receives, decoded."""

    host: str
    port: int
    topic: str
    client_id: str = field(default_factory=lambda: f"cloud-{uuid.uuid4().hex[:8]}")
    messages: list[UpMessage] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                   clean_session=False)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any,
                    _props: Any = None) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/commands"):
            return  # the controller's own commands, seen through a '#' subscription
        with self._lock:
            self.raw.append((msg.topic, msg.payload))
            try:
                self.messages.append(decode(msg.payload, expect=UpMessage))
            except Exception as err:  # recorded: a test asserts there are none
                self.invalid.append(f"{msg.topic}: {err}")
            self._lock.notify_all()

    def start(self) -> CloudSubscriber:
        self._client.connect(self.host, self.port, keepalive=10)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def wait_for(self, predicate: Callable[[list[UpMessage]], bool], timeout_s: float,
                 what: str) -> list[UpMessage]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [m.type for m in self.messages][-20:]
                    raise AssertionError(f"timed out waiting for {what}; last: {kinds}")
                self._lock.wait(min(left, 0.2))
            return list(self.messages)

    def of_type(self, kind: str) -> list[Any]:
        with self._lock:
            return [m for m in self.messages if m.type == kind]


class CloudPublisher:
    """The controller's side: QoS 1 publishes over one connection."""

    def __init__(self, host: str, port: int) -> None:
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"ctl-{uuid.uuid4().hex[:8]}")
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def signed_command(signer: Signer, cls: type[Command], *, thing: str, rollout_id: str,
                   rollout_seq: int, **args: Any) -> bytes:
    fields: dict[str, Any] = {
        "command_id": uuid.uuid4().hex, "target": {"kind": "thing", "name": thing},
        "rollout_id": rollout_id, "rollout_seq": rollout_seq,
        "issued_at": int(time.time() * 1000)}
    if args:
        fields["args"] = args
    return encode(signer.sign(cls(**fields)))
