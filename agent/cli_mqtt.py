"""Command-line options shared by every command that talks MQTT directly."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlparse

from agent.errors import ConfigError


def add_mqtt_tls_arguments(parser: argparse.ArgumentParser, *, endpoint_help: str,
                           key_flag: str = "--key", key_help: str | None = None) -> None:
    """``--endpoint --cert KEY_FLAG --ca``: mutual TLS to AWS IoT Core (``key_flag`` for
    commands whose ``--key`` means something else)."""
    parser.add_argument("--endpoint", help=endpoint_help)
    parser.add_argument("--cert", type=Path)
    parser.add_argument(key_flag, type=Path, help=key_help)
    parser.add_argument("--ca", type=Path)


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of ``--broker mqtt://HOST[:PORT]`` (port 1883 by default)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ConfigError(f"--broker wants mqtt://HOST:PORT, got {url!r}")
    return parsed.hostname, parsed.port or 1883
