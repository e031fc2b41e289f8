"""The nucleus's IoT Core link over MQTT 3.1.1: to the embedded broker (which speaks no
MQTT 5) and to a broker that requires a client certificate, as AWS IoT Core does. A
component publishes and subscribes through IPC with the real SDK client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_brokers import running_mosquitto
from test_nucleus_services import AGENT, RECIPE, T, sdk_client

from agent.tools.brokers.certs import TestPki, make_test_pki
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.brokers.mosquitto import MosquittoTls
from agent.tools.nucleus import EmulatedNucleus, Recipe
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig

THING = "bridge-1"


def _round_trip(nucleus_broker: MqttConfig, cloud: MqttConfig) -> None:
    """Device -> cloud through IPC PublishToIoTCore; cloud -> device through a subscription."""
    from awsiot.greengrasscoreipc import model

    cloud_side = MqttTransport(config=cloud)
    got_up: list[bytes] = []
    up = threading.Event()
    cloud_side.subscribe(f"edge/{THING}/metrics",
                         lambda _t, p: (got_up.append(p), up.set()))
    cloud_side.connect(T)
    with EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name=THING,
                         broker=nucleus_broker) as nucleus:
        assert nucleus.link.connected  # type: ignore[attr-defined]
        ipc = sdk_client(nucleus, AGENT)
        down: list[bytes] = []
        arrived = threading.Event()

        def on_event(event: Any) -> None:
            down.append(bytes(event.message.payload))
            arrived.set()

        try:
            ipc.subscribe_to_iot_core(topic_name=f"edge/{THING}/commands",
                                      qos=model.QOS.AT_LEAST_ONCE, on_stream_event=on_event)
            ipc.publish_to_iot_core(topic_name=f"edge/{THING}/metrics", qos="1", payload=b"up")
            assert up.wait(T) and got_up == [b"up"]
            cloud_side.publish(f"edge/{THING}/commands", b"down").result(T)
            assert arrived.wait(T) and down == [b"down"]
        finally:
            ipc.close(executor_wait=False)
    cloud_side.close()


def test_bridge_to_the_embedded_broker() -> None:
    with EmbeddedBroker() as broker:
        _round_trip(MqttConfig(host=broker.host, port=broker.port, client_id=THING),
                    MqttConfig(host=broker.host, port=broker.port, client_id="cloud"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tls = MosquittoTls(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key,
                       require_certificate=True)
    with running_mosquitto(tmp_path_factory.mktemp("mq-tls"), tls=tls) as broker:
        yield broker


def test_bridge_with_mutual_tls(tls_broker: Any, pki: TestPki) -> None:
    files: dict[str, Path] = {"cert_path": pki.client_cert, "key_path": pki.client_key,
                              "ca_path": pki.ca_cert}
    _round_trip(MqttConfig(host="localhost", port=tls_broker.port, client_id=THING, **files),
                MqttConfig(host="localhost", port=tls_broker.port, client_id="cloud", **files))
