"""Spool + drainer + MqttTransport through real broker outages.

A producer keeps putting sequenced messages while mosquitto is stopped and started
again and again; a persistent-session subscriber (paho, QoS 1) must end up with every
sequence number exactly once and in order after de-duplicating by message id.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mqtt_brokers import Subscriber, dedupe_in_order, require_mosquitto, sequenced

from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.spool import Priority, Spool
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig

TOPIC = "edge/outage-device/metrics"


def _device(port: int, spool: Spool) -> tuple[MqttTransport, SpoolDrainer]:
    transport = MqttTransport(config=MqttConfig(
        host="127.0.0.1", port=port, client_id="outage-device", keepalive_s=10,
        reconnect_min_s=1, reconnect_max_s=1, operation_timeout_s=5))
    drainer = SpoolDrainer(spool=spool, transport=transport, rate_limit_per_s=1000,
                           publish_timeout_s=5, backoff_min_s=0.05, backoff_max_s=0.5)
    return transport, drainer


def _run_outages(tmp_path: Path, *, restarts: int, up_s: float, down_s: float) -> None:
    require_mosquitto()
    broker = MosquittoBroker(workdir=tmp_path / "mq")
    broker.start()
    subscriber = Subscriber(host=broker.host, port=broker.port, topic_filter="edge/+/metrics")
    spool = Spool(path=tmp_path / "spool.db")
    transport, drainer = _device(broker.port, spool)
    produced = 0
    stop_producing = threading.Event()

    def produce() -> None:
        nonlocal produced
        while not stop_producing.is_set():
            spool.put(TOPIC, sequenced(produced), priority=Priority.METRICS)
            produced += 1
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    try:
        transport.connect(5.0)
        drainer.start()
        producer.start()
        for _ in range(restarts):
            time.sleep(up_s)
            broker.stop()  # SIGTERM: mosquitto saves sessions and queued messages
            time.sleep(down_s)
            broker.start()
        time.sleep(up_s)
        stop_producing.set()
        producer.join()
        assert drainer.flush(60.0) == 0, drainer.stats()
        expected = {f"m-{i}" for i in range(produced)}
        assert subscriber.wait_for(expected, 60.0), "the subscriber is missing messages"
        assert spool.dropped_metrics() == 0
    finally:
        stop_producing.set()
        drainer.stop()
        transport.close()
        subscriber.close()
        spool.close()
        broker.stop()

    order, duplicates = dedupe_in_order(subscriber.payloads())
    stats = drainer.stats()
    print(f"\n{produced} messages through {restarts} broker restarts: {duplicates} duplicates "
          f"dropped by id, {stats.retries} resent by the drainer, {stats.failures} failures")
    assert order == list(range(produced))
    assert stats.sent == produced


def test_every_message_arrives_once_and_in_order_through_five_restarts(tmp_path: Path) -> None:
    _run_outages(tmp_path, restarts=5, up_s=0.8, down_s=0.4)


@pytest.mark.slow
def test_soak_twenty_five_restarts(tmp_path: Path) -> None:
    _run_outages(tmp_path, restarts=25, up_s=2.0, down_s=1.5)


def test_offline_start_then_the_broker_appears(tmp_path: Path) -> None:
    require_mosquitto()
    broker = MosquittoBroker(workdir=tmp_path / "mq")
    # The cloud side subscribed once (a persistent session), then the broker went away:
    # mosquitto keeps the session on disk and queues for it even before it reconnects.
    broker.start()
    Subscriber(host=broker.host, port=broker.port, topic_filter="edge/+/metrics").close()
    broker.stop()

    spool = Spool(path=tmp_path / "spool.db")
    transport, drainer = _device(broker.port, spool)
    subscriber: Subscriber | None = None
    try:
        started = time.monotonic()
        transport.connect(2.0)  # nothing listens: returns, keeps trying in the background
        assert time.monotonic() - started < 3.0 and not transport.is_connected()
        drainer.start()
        for i in range(500):
            spool.put(TOPIC, sequenced(i), priority=Priority.METRICS)
        assert drainer.flush(0.5) == 500  # bounded wait; the backlog stays spooled
        broker.start()
        assert drainer.flush(30.0) == 0, drainer.stats()
        subscriber = Subscriber(host=broker.host, port=broker.port,
                                topic_filter="edge/+/metrics")
        assert subscriber.wait_for({f"m-{i}" for i in range(500)}, 30.0)
        order, duplicates = dedupe_in_order(subscriber.payloads())
        print(f"\noffline backlog of 500 delivered, {duplicates} duplicates")
        assert order == list(range(500))
    finally:
        drainer.stop()
        transport.close()
        if subscriber is not None:
            subscriber.close()
        spool.close()
        broker.stop()
