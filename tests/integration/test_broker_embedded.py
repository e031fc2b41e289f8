"""The embedded amqtt broker with awscrt's MQTT 3.1.1 client: connect, subscribe, QoS 1
publish; and the spool drained through it."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.spool import Spool
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig


def _transport(broker: EmbeddedBroker, client_id: str) -> MqttTransport:
    return MqttTransport(config=MqttConfig(host=broker.host, port=broker.port,
                                           client_id=client_id))


def test_awscrt_round_trip_through_the_embedded_broker(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        assert broker.port > 0 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
        device, cloud = _transport(broker, "emb-device"), _transport(broker, "emb-cloud")
        got: list[tuple[str, bytes]] = []
        all_arrived = threading.Event()

        def on_message(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            if len(got) == 50:
                all_arrived.set()

        try:
            device.connect(5.0)
            cloud.connect(5.0)
            cloud.subscribe("edge/+/metrics", on_message, qos=1)
            with Spool(path=tmp_path / "spool.db") as spool:
                for i in range(50):
                    spool.put("edge/emb-device/metrics", str(i).encode())
                drainer = SpoolDrainer(spool=spool, transport=device, rate_limit_per_s=0)
                drainer.start()
                try:
                    assert drainer.flush(10.0) == 0
                finally:
                    drainer.stop()
            assert all_arrived.wait(10.0)
            assert [int(p) for _t, p in got] == list(range(50))
        finally:
            device.close()
            cloud.close()


def test_start_stop_start_again() -> None:
    broker = EmbeddedBroker()
    broker.start()
    first_port = broker.port
    broker.stop()
    broker.stop()  # idempotent
    again = EmbeddedBroker(port=first_port)
    with again:
        assert again.port == first_port
