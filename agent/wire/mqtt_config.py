"""Configuration of the direct MQTT transport, and the awscrt connection built from it.

Three shapes, chosen by which files are given:

- ``cert_path`` + ``key_path`` (+ ``ca_path``): mutual TLS, as AWS IoT Core requires
  (``awsiot.mqtt_connection_builder.mtls_from_path``);
- ``ca_path`` alone, or ``tls: true``: server-authenticated TLS, no client certificate;
- none of them: plain TCP, for a local broker (development and emulation only).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.core.errors import ConfigError
from agent.wire.transport import TransportConfigError

_AWSCRT_RECONNECT_S = 3600


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of a plain-TCP broker address ``mqtt://HOST[:PORT]`` (``tcp://`` too;
    port 1883 by default), as ``--broker`` gives it."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ConfigError(f"--broker wants mqtt://HOST:PORT, got {url!r}")
    return parsed.hostname, parsed.port or 1883


class MqttConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1, description="broker host or AWS IoT endpoint")
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="default 8883 with TLS, 1883 without")
    client_id: str = Field(min_length=1, max_length=128)
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    tls: bool | None = Field(default=None, description="default: TLS when any file is given")
    clean_session: bool = False
    keepalive_s: int = Field(default=60, ge=5, le=1200)  # AWS IoT allows 30..1200
    ping_timeout_ms: int = Field(default=3000, ge=100)
    tcp_connect_timeout_s: float = Field(default=5.0, gt=0)
    operation_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("cert_path and key_path go together (mutual TLS)")
        if self.tls is False and (self.cert_path or self.ca_path):
            raise ValueError("tls: false contradicts cert_path/ca_path")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.ping_timeout_ms >= self.keepalive_s * 1000:
            raise ValueError("ping_timeout_ms must be shorter than keepalive_s")
        return self

    @property
    def uses_tls(self) -> bool:
        if self.tls is not None:
            return self.tls
        return self.cert_path is not None or self.ca_path is not None

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.uses_tls else 1883)

    def check_files(self) -> None:
        """Raise TransportConfigError naming any certificate file that cannot be read."""
        for field in ("cert_path", "key_path", "ca_path"):
            path: Path | None = getattr(self, field)
            if path is None:
                continue
            if not path.is_file():
                raise TransportConfigError(f"mqtt {field} {path} does not exist")
            try:
                with path.open("rb") as handle:
                    handle.read(1)
            except OSError as err:
                raise TransportConfigError(f"mqtt {field} {path} is not readable: {err}") from err


def build_connection(config: MqttConfig, *, callbacks: dict[str, Callable[..., None]]) -> Any:
    """An unconnected ``awscrt.mqtt.Connection`` for ``config``; ``callbacks`` are the
    ``on_connection_*`` keyword arguments."""
    from awscrt import io, mqtt
    from awscrt.exceptions import AwsCrtError
    from awsiot import mqtt_connection_builder

    config.check_files()
    common: dict[str, Any] = {
        "client_id": config.client_id,
        "clean_session": config.clean_session,
        "keep_alive_secs": config.keepalive_s,
        "ping_timeout_ms": config.ping_timeout_ms,
        "protocol_operation_timeout_ms": int(config.operation_timeout_s * 1000),
        # MqttTransport reconnects with fresh connections; awscrt's own reconnect (which
        # resends unacknowledged publishes out of order) must never get to run first.
        "reconnect_min_timeout_secs": _AWSCRT_RECONNECT_S,
        "reconnect_max_timeout_secs": _AWSCRT_RECONNECT_S,
        **callbacks,
    }
    try:
        if config.cert_path is not None and config.key_path is not None:
            return mqtt_connection_builder.mtls_from_path(
                endpoint=config.host, port=config.effective_port,
                cert_filepath=str(config.cert_path), pri_key_filepath=str(config.key_path),
                ca_filepath=str(config.ca_path) if config.ca_path else None,
                tcp_connect_timeout_ms=int(config.tcp_connect_timeout_s * 1000),
                # The SDK would otherwise put its metrics into the MQTT username.
                enable_metrics_collection=False, **common)
        tls_ctx = None
        if config.uses_tls:
            options = io.TlsContextOptions()
            if config.ca_path is not None:
                options.override_default_trust_store_from_path(None, str(config.ca_path))
            tls_ctx = io.ClientTlsContext(options)
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = int(config.tcp_connect_timeout_s * 1000)
        client = mqtt.Client(io.ClientBootstrap.get_or_create_static_default(), tls_ctx)
        return mqtt.Connection(client=client, host_name=config.host,
                               port=config.effective_port, socket_options=socket_options,
                               **common)
    except (AwsCrtError, ValueError, RuntimeError) as err:
        raise TransportConfigError(f"cannot set up the MQTT connection: {err}") from err
