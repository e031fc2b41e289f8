"""Settings of the local inference API (the agent's ``server`` block).

Greengrass configuration writes them camelCase (``server: {port: 8000, queueSize: 16}``).
The HTTP listener binds the loopback address only unless ``host`` says otherwise; both
Unix sockets are created with mode 0660, a relative path being relative to the agent's
state folder (``stateDir``, which is inside the component's work folder under
Greengrass), so two agents on one machine never share a socket.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ServerConfig(BaseModel):
    """Where the local inference API listens and how much it takes at once."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    enabled: bool = Field(default=True, description="false: no API (the loop still runs)")
    host: str | None = Field(
        default="127.0.0.1", description="the HTTP listener's address (loopback unless set "
                                         "otherwise); null: no TCP listener")
    port: int = Field(default=8000, ge=0, le=65535, description="0: any free port (logged)")
    http_socket: Path | None = Field(
        default=Path("inference-http.sock"),
        description="the Open Inference Protocol over a Unix socket (relative to stateDir); "
                    "null: none")
    native_socket: Path | None = Field(
        default=Path("inference.sock"),
        description="the native protocol of agent.client (relative to stateDir); null: none")
    socket_mode: int = Field(default=0o660, ge=0, le=0o777)
    queue_size: int = Field(default=16, ge=1, description="requests waiting per model; more "
                                                         "are answered busy (HTTP 503)")
    timeout_seconds: float = Field(default=5.0, gt=0,
                                   description="a request's deadline unless it sets one")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_connections: int = Field(default=32, ge=1)
