"""Results on Greengrass local pub/sub: ``PublishToTopic`` with a JSON message, over the
agent's own IPC connection to the nucleus (the one its IoT Core transport and component
operations use; no second connection).

Any component on the device subscribes with ``SubscribeToTopic`` on the topic (its recipe
needs the ``aws.greengrass.ipc.pubsub`` grant for it); the agent's recipe grants the agent
``aws.greengrass#PublishToTopic`` on exactly that topic, and the nucleus refuses any other.
A publish is sent without waiting for its answer: at most ``max_in_flight`` are
unanswered at once, and a result past that, or one the nucleus refuses, is counted as
failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from agent.device.results.stream import Sink
from agent.device.uplink.ipc import IpcConnection


class LocalPubSubSink(Sink):
    """Publishes each result as a JSON message on ``topic``."""

    destination = "local"

    def __init__(self, connection: IpcConnection, topic: str, *,
                 max_in_flight: int = 32) -> None:
        super().__init__()
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

        self.connection = connection
        self.topic = topic
        self.max_in_flight = max_in_flight
        self.delivered = 0  # publishes the nucleus answered
        self._message, self._json = PublishMessage, JsonMessage
        self._in_flight = 0
        self._lock = threading.Condition()

    def publish(self, result: dict[str, Any], payload: bytes,
                outputs: Sequence[np.ndarray]) -> None:
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                busy = True
            else:
                busy = False
                self._in_flight += 1
        if busy:
            self.fail(f"{self.max_in_flight} publishes on {self.topic} still unanswered")
            return
        message = self._message(json_message=self._json(message=result))
        future = self.connection.send(
            f"publish a result on {self.topic}",
            lambda client: client.publish_to_topic_async(topic=self.topic,
                                                         publish_message=message),
            late=f"publish on {self.topic}: no answer from the nucleus in time")
        future.add_done_callback(self._answered)

    def _answered(self, future: Future[None]) -> None:
        error = future.exception()
        with self._lock:
            self._in_flight -= 1
            if error is None:
                self.delivered += 1
            self._lock.notify_all()
        if error is not None:
            self.fail(str(error))

    def close(self, timeout_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight and time.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - time.monotonic()))
