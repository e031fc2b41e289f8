"""The fleet demo's parts: the broker playing AWS IoT Core and the Greengrass components."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import ConfigError
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.demo.fleet_options import DemoOptions
from agent.wire.mqtt_config import MqttConfig, broker_address


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    describe: str
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def tls(self) -> bool:
        return self.cert is not None

    def client(self, client_id: str, *, clean_session: bool = False) -> MqttConfig:
        return MqttConfig(host=self.host, port=self.port, client_id=client_id,
                          cert_path=self.cert, key_path=self.key, ca_path=self.ca,
                          clean_session=clean_session)

    def nucleus_link(self, thing: str) -> MqttConfig:
        """A device nucleus's IoT Core connection: the thing name as client id and a
        clean session, so a device that returns gets what applies now from the
        controller, not a backlog of what it missed."""
        return self.client(thing, clean_session=True)


@contextlib.contextmanager
def open_broker(options: DemoOptions, workdir: Path) -> Iterator[Broker]:
    """``--broker URL`` or ``--endpoint`` as given; otherwise start a local broker (the
    embedded one, or mosquitto with ``mosquitto=True``) and stop it on the way out."""
    if options.broker and options.endpoint:
        raise ConfigError("give --broker or --endpoint, not both")
    if options.broker:
        host, port = broker_address(options.broker)
        yield Broker(host, port, f"{options.broker} (given)")
        return
    if options.endpoint:
        missing = [name for name in ("cert", "key", "ca") if getattr(options, name) is None]
        if missing:
            raise ConfigError(f"--endpoint needs --{' --'.join(missing)} (mutual TLS)")
        endpoint, _, tls_port = options.endpoint.partition(":")
        if tls_port and not tls_port.isdigit():
            raise ConfigError(f"--endpoint wants HOST or HOST:PORT, got {options.endpoint!r}")
        yield Broker(endpoint, int(tls_port or 8883), f"{options.endpoint} (mutual TLS)",
                     cert=options.cert, key=options.key, ca=options.ca)
        return
    if options.mosquitto:
        if find_mosquitto() is None:
            raise ConfigError("--mosquitto: mosquitto is not installed "
                              "(apt-get install mosquitto)")
        mosquitto = MosquittoBroker(workdir=workdir, persistence=False)
        mosquitto.start()
        try:
            yield Broker(mosquitto.host, mosquitto.port, f"mosquitto on {mosquitto.url}")
        finally:
            mosquitto.stop()
        return
    embedded = EmbeddedBroker()
    embedded.start()
    try:
        yield Broker(embedded.host, embedded.port, f"embedded broker on {embedded.url}")
    finally:
        embedded.stop()


def build_components(models: Path, private_key: Path, key_id: str, out: Path, *,
                     say: Callable[[str], None]) -> Path:
    """The Greengrass components (the agent, and digits v1 as the first-model component),
    built exactly as ``edge-agent package component`` builds them; the local component
    store (``recipes/`` and ``artifacts/``) the emulated nuclei deploy from."""
    from agent.tools.greengrass.component import ComponentOptions
    from agent.tools.greengrass.component import build_components as build

    written = build(ComponentOptions(models=models, key=private_key, key_id=key_id, out=out,
                                     model_versions=(1,)))
    for component in written:
        say(f"   {component.name} {', '.join(component.versions)}: "
            f"{len(component.artifacts)} artifact(s)")
    return out / "greengrass-local"
