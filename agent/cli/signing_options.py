"""Command-line options for the controller's signing key, the same in every command that
signs (``package model``, ``package component``, ``rollout start``).

``--signing-key`` names the Ed25519 private key (PEM or raw base64) and ``--key-id`` its id
in the devices' trust stores; ``--key``/``--cert``/``--ca`` are always the TLS client
credentials of an MQTT connection (:mod:`agent.cli.mqtt_options`), never a signing key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.wire.signing import Signer


def add_signing_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--signing-key FILE --key-id ID`` (both required); ``what`` ends the help text."""
    parser.add_argument("--signing-key", type=Path, required=True, metavar="FILE",
                        help=f"Ed25519 private key (PEM or base64) that signs {what}")
    parser.add_argument("--key-id", required=True, metavar="ID",
                        help="id of that key in the devices' trust stores")


def signer_from_args(args: argparse.Namespace) -> Signer:
    return Signer.from_file(args.signing_key, key_id=args.key_id)
