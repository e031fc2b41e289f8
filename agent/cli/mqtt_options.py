"""Command-line options shared by every command that talks MQTT directly."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlparse

from agent.core.errors import ConfigError


def add_mqtt_tls_arguments(parser: argparse.ArgumentParser, *, endpoint_help: str,
                           key_flag: str = "--key", key_help: str | None = None) -> None:
    """``--endpoint --cert KEY_FLAG --ca``: mutual TLS to AWS IoT Core.

    ``--cert``/``--key``/``--ca`` are TLS credentials in every command; a signing key is
    ``--signing-key`` (:mod:`agent.cli.signing_options`). ``key_flag`` remains for a command not
    yet moved to that vocabulary."""
    parser.add_argument("--endpoint", help=endpoint_help)
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="TLS client certificate (PEM) for --endpoint")
    parser.add_argument(key_flag, type=Path, metavar="FILE",
                        help=key_help or "TLS private key of --cert")
    parser.add_argument("--ca", type=Path, metavar="FILE",
                        help="CA certificate of the endpoint, e.g. AmazonRootCA1.pem")


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of ``--broker mqtt://HOST[:PORT]`` (port 1883 by default)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ConfigError(f"--broker wants mqtt://HOST:PORT, got {url!r}")
    return parsed.hostname, parsed.port or 1883
