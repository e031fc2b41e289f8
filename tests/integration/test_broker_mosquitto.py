"""The mosquitto helper: persistence across restarts, port reuse, the throughput bench."""

from __future__ import annotations

from pathlib import Path

import pytest
from mqtt_brokers import Subscriber, require_mosquitto, running_mosquitto, sequenced

from agent.tools.bench.telemetry_path import spool_throughput
from agent.tools.brokers import BrokerMissingError
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig


def test_queued_messages_for_an_offline_session_survive_a_restart(tmp_path: Path) -> None:
    require_mosquitto()
    broker = MosquittoBroker(workdir=tmp_path / "mq")
    broker.start()
    try:
        Subscriber(host=broker.host, port=broker.port, topic_filter="edge/#",
                   client_id="offline-cloud").close()
        device = MqttTransport(config=MqttConfig(host=broker.host, port=broker.port,
                                                 client_id="persist-device"))
        try:
            device.connect(5.0)
            for i in range(5):
                device.publish("edge/persist-device/events", sequenced(i)).result(5)
        finally:
            device.close()
        port = broker.port
        broker.restart()  # SIGTERM writes mosquitto.db; the new process reads it back
        assert broker.port == port and (broker.workdir / "mosquitto.db").exists()
        subscriber = Subscriber(host=broker.host, port=broker.port, topic_filter="edge/#",
                                client_id="offline-cloud")
        try:
            assert subscriber.wait_for({f"m-{i}" for i in range(5)}, 10.0)
        finally:
            subscriber.close()
    finally:
        broker.stop()


def test_kill_and_start_again(tmp_path: Path) -> None:
    with running_mosquitto(tmp_path / "mq") as broker:
        broker.kill()
        assert not broker.is_running()
        broker.start()
        assert broker.is_running()


def test_missing_mosquitto_is_a_typed_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.tools.brokers.mosquitto.find_mosquitto", lambda: None)
    with pytest.raises(BrokerMissingError, match="not installed"):
        MosquittoBroker(workdir=tmp_path)


def test_spool_throughput_bench_runs(tmp_path: Path) -> None:
    with running_mosquitto(tmp_path / "mq") as broker:
        rate = spool_throughput(broker, 0.3)
    print(f"\nspool -> mosquitto QoS 1: {rate:.0f} msg/s (this machine, not asserted)")
    assert rate > 0
