"""Helpers for the tests that run against real brokers: a mosquitto fixture that skips
when mosquitto is not installed, and an independent (paho) subscriber with a persistent
session that records what arrived."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.tools.brokers.mosquitto import MosquittoBroker, MosquittoTls, find_mosquitto

NO_MOSQUITTO = "mosquitto is not installed (apt-get install mosquitto); needed for broker tests"


def require_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip(NO_MOSQUITTO)


@contextmanager
def running_mosquitto(workdir: Path, *, tls: MosquittoTls | None = None,
                      port: int | None = None) -> Iterator[MosquittoBroker]:
    """A started mosquitto (skipping the test when it is not installed), stopped after."""
    require_mosquitto()
    broker = MosquittoBroker(workdir=workdir, tls=tls, port=port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A paho MQTT 3.1.1 client with ``clean_session=False`` subscribed at QoS 1; it keeps
    its session across broker restarts, so the broker queues what it misses."""

    def __init__(self, *, host: str, port: int, topic_filter: str,
                 client_id: str = "test-subscriber") -> None:
        import paho.mqtt.client as paho

        self.topic_filter = topic_filter
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   clean_session=False, protocol=paho.MQTTv311)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("subscriber did not connect")

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=1)
            self.connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.connected.clear()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(payload) for _topic, payload in self.messages]

    def wait_for(self, ids: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= {p["id"] for p in self.payloads()}:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def sequenced(seq: int) -> bytes:
    """A payload with a message id (what receivers de-duplicate by) and a sequence."""
    return json.dumps({"id": f"m-{seq}", "seq": seq}).encode()


def dedupe_in_order(payloads: list[dict[str, Any]]) -> tuple[list[int], int]:
    """Sequences in first-arrival order with duplicates removed, and how many were dropped."""
    seen: set[str] = set()
    order: list[int] = []
    for payload in payloads:
        if payload["id"] in seen:
            continue
        seen.add(payload["id"])
        order.append(payload["seq"])
    return order, len(payloads) - len(order)
