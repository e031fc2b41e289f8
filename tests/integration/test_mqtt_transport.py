"""MqttTransport (awscrt MQTT 3.1.1) against a real mosquitto: QoS 1 publish confirmed by
PUBACK, subscriptions (again after the broker forgot them), a broker that is down,
configuration errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mqtt_brokers import require_mosquitto, running_mosquitto
from pydantic import ValidationError

from agent.tools.brokers.mosquitto import MosquittoBroker, free_port
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.transport import Transport, TransportConfigError, TransportError


def _config(port: int, client_id: str, **extra: object) -> MqttConfig:
    return MqttConfig.model_validate({"host": "127.0.0.1", "port": port,
                                      "client_id": client_id, "keepalive_s": 30, **extra})


def _wait(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_publish_subscribe_round_trip(tmp_path: Path) -> None:
    with running_mosquitto(tmp_path / "mq") as broker:
        device: Transport = MqttTransport(config=_config(broker.port, "device-1"))
        cloud = MqttTransport(config=_config(broker.port, "cloud-1"))
        got: list[tuple[str, bytes]] = []
        arrived = threading.Event()

        def on_message(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            arrived.set()

        try:
            device.connect(5.0)
            cloud.connect(5.0)
            assert device.is_connected() and cloud.is_connected()
            cloud.subscribe("edge/+/metrics", on_message)
            assert device.publish("edge/t1/metrics", b"hello").result(5) is None
            device.publish("edge/t1/other", b"not for us").result(5)
            assert arrived.wait(5)
            assert _wait(lambda: len(got) >= 1)
            time.sleep(0.1)
            assert got == [("edge/t1/metrics", b"hello")]
        finally:
            device.close()
            cloud.close()
        assert not device.is_connected()


def test_subscriptions_are_restored_when_the_broker_forgot_them(tmp_path: Path) -> None:
    require_mosquitto()
    # Without persistence mosquitto forgets every session when it restarts, so the
    # reconnect reports session_present=False and the transport must subscribe again.
    broker = MosquittoBroker(workdir=tmp_path / "mq", persistence=False)
    broker.start()
    cloud = MqttTransport(config=_config(broker.port, "cloud-2", reconnect_max_s=1))
    device = MqttTransport(config=_config(broker.port, "device-2", reconnect_max_s=1))
    got: list[bytes] = []
    try:
        cloud.connect(5.0)
        device.connect(5.0)
        cloud.subscribe("edge/t2/#", lambda _t, p: got.append(p))
        device.publish("edge/t2/x", b"before").result(5)
        assert _wait(lambda: got == [b"before"])
        broker.restart()
        assert _wait(lambda: cloud.is_connected() and device.is_connected(), 15)

        def delivered_again() -> bool:
            # The resubscribe is asynchronous; until its SUBACK, publishes go nowhere.
            device.publish("edge/t2/x", b"after").result(5)
            time.sleep(0.1)
            return b"after" in got

        assert _wait(delivered_again, 10)
    finally:
        device.close()
        cloud.close()
        broker.stop()


def test_connect_to_a_broker_that_is_down_returns_and_keeps_trying(tmp_path: Path) -> None:
    port = free_port()
    transport = MqttTransport(config=_config(port, "device-3", reconnect_max_s=1))
    started = time.monotonic()
    try:
        transport.connect(2.0)  # refused at once: returns without raising
        assert time.monotonic() - started < 3.0
        assert not transport.is_connected()
        with pytest.raises(TransportError, match="not connected"):
            transport.publish("edge/t3/state", b"x").result(1)
        with running_mosquitto(tmp_path / "mq", port=port):
            assert _wait(transport.is_connected, 10), transport.last_error
            transport.publish("edge/t3/state", b"x").result(5)
    finally:
        transport.close()


def test_missing_certificate_files_are_a_typed_error(tmp_path: Path) -> None:
    config = _config(8883, "device-4", cert_path=tmp_path / "nope.pem",
                     key_path=tmp_path / "nope.key")
    with pytest.raises(TransportConfigError, match=r"cert_path .*nope\.pem does not exist"):
        MqttTransport(config=config)
    assert issubclass(TransportConfigError, TransportError)


@pytest.mark.parametrize("bad", [
    {"cert_path": "c.pem"},  # a certificate without its key
    {"tls": False, "ca_path": "ca.pem"},
    {"keepalive_s": 2},
    {"reconnect_min_s": 10, "reconnect_max_s": 5},
    {"unknown": 1},
])
def test_config_rejects_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _config(1883, "d", **bad)


def test_config_defaults() -> None:
    assert _config(1883, "d").uses_tls is False
    tls = MqttConfig(host="x.iot.eu-west-1.amazonaws.com", client_id="t",
                     cert_path=Path("c"), key_path=Path("k"))
    assert tls.uses_tls and tls.effective_port == 8883 and tls.clean_session is False
