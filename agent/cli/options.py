"""Command-line options that mean one thing in every command that takes them.

* MQTT/TLS: ``--endpoint --cert --key --ca`` connect to AWS IoT Core with mutual TLS;
  ``--cert``/``--key``/``--ca`` are always the TLS client credentials of an MQTT
  connection, never a signing key. A plain-TCP ``--broker mqtt://HOST[:PORT]`` is parsed
  by :func:`agent.wire.mqtt_config.broker_address`.
* Signing: ``--signing-key FILE --key-id ID``, the controller's Ed25519 private key (PEM or
  raw base64) and its id in the devices' trust stores, the same in every command that
  signs (``package model``, ``package component``, ``rollout start``).
* Trust: ``--trusted-key ID=VALUE`` (repeatable), a controller public key a command
  verifies with; VALUE is a key file, PEM or base64 (:func:`trusted_keys_from_args`), in
  ``serve``, ``predict`` and ``fleet devices`` alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.errors import ConfigError
from agent.wire.signing import Signer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def add_mqtt_tls_arguments(parser: argparse.ArgumentParser, *, endpoint_help: str,
                           key_flag: str = "--key", key_help: str | None = None) -> None:
    """``--endpoint --cert KEY_FLAG --ca``: mutual TLS to AWS IoT Core.

    ``--cert``/``--key``/``--ca`` are TLS credentials in every command; a signing key is
    ``--signing-key`` (:func:`add_signing_arguments`). ``key_flag`` remains for a command
    not yet moved to that vocabulary."""
    parser.add_argument("--endpoint", help=endpoint_help)
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="TLS client certificate (PEM) for --endpoint")
    parser.add_argument(key_flag, type=Path, metavar="FILE",
                        help=key_help or "TLS private key of --cert")
    parser.add_argument("--ca", type=Path, metavar="FILE",
                        help="CA certificate of the endpoint, e.g. AmazonRootCA1.pem")


def add_signing_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--signing-key FILE --key-id ID`` (both required); ``what`` ends the help text."""
    parser.add_argument("--signing-key", type=Path, required=True, metavar="FILE",
                        help=f"Ed25519 private key (PEM or base64) that signs {what}")
    parser.add_argument("--key-id", required=True, metavar="ID",
                        help="id of that key in the devices' trust stores")


def signer_from_args(args: argparse.Namespace) -> Signer:
    """The signer that ``--signing-key``/``--key-id`` name."""
    return Signer.from_file(args.signing_key, key_id=args.key_id)


def trusted_keys_from_args(items: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    """The keys of ``--trusted-key ID=VALUE`` options, by id; VALUE is a key file, PEM or
    base64, read against the working folder (:func:`agent.wire.keys.trusted_public_key`)."""
    from agent.wire.keys import trusted_public_key

    keys = {}
    for item in items:
        key_id, sep, value = item.partition("=")
        if not sep or not key_id:
            raise ConfigError(f"--trusted-key wants ID=VALUE (a key file, PEM or base64), "
                              f"got {item!r}")
        keys[key_id] = trusted_public_key(key_id, value)
    return keys
