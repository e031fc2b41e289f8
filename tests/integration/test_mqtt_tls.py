"""Mutual TLS, as AWS IoT Core does it: mosquitto with ``require_certificate true``.

A device certificate signed by the broker's CA connects and publishes; no client
certificate, or one from another CA, is a TransportError from ``connect``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_brokers import running_mosquitto

from agent.tools.brokers.certs import TestPki, make_test_pki
from agent.tools.brokers.mosquitto import MosquittoBroker, MosquittoTls
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.transport import TransportConfigError, TransportError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("rogue"), ca_name="some other CA")


@pytest.fixture(scope="module")
def tls_broker(pki: TestPki, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[MosquittoBroker]:
    tls = MosquittoTls(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key,
                       require_certificate=True)
    with running_mosquitto(tmp_path_factory.mktemp("mq-tls"), tls=tls) as broker:
        yield broker


def _transport(broker: MosquittoBroker, client_id: str, **files: Path) -> MqttTransport:
    return MqttTransport(config=MqttConfig(host="localhost", port=broker.port,
                                           client_id=client_id, **files))


def test_device_certificate_connects_and_publishes(tls_broker: MosquittoBroker,
                                                   pki: TestPki) -> None:
    transport = _transport(tls_broker, "tls-device", cert_path=pki.client_cert,
                           key_path=pki.client_key, ca_path=pki.ca_cert)
    assert transport.config.uses_tls and tls_broker.url.startswith("mqtts://")
    try:
        transport.connect(10.0)
        assert transport.is_connected()
        transport.publish("edge/tls-device/state", b"{}").result(5)
    finally:
        transport.close()


def test_no_client_certificate_is_refused(tls_broker: MosquittoBroker, pki: TestPki) -> None:
    transport = _transport(tls_broker, "tls-anonymous", ca_path=pki.ca_cert)
    try:
        with pytest.raises(TransportError, match="rejected"):
            transport.connect(10.0)
        assert not transport.is_connected()
    finally:
        transport.close()


def test_certificate_from_another_ca_is_refused(tls_broker: MosquittoBroker, pki: TestPki,
                                                rogue_pki: TestPki) -> None:
    transport = _transport(tls_broker, "tls-rogue", cert_path=rogue_pki.client_cert,
                           key_path=rogue_pki.client_key, ca_path=pki.ca_cert)
    try:
        with pytest.raises(TransportConfigError, match="rejected"):
            transport.connect(10.0)
    finally:
        transport.close()


def test_the_test_pki_has_the_right_names(pki: TestPki) -> None:
    from cryptography import x509

    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert oct(pki.client_key.stat().st_mode & 0o777) == "0o600"
