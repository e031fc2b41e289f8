"""Ed25519 keys: generation and loading, from PEM files or raw base64 strings.

Two text forms are accepted everywhere a key is read:

- PEM: PKCS#8 ``PRIVATE KEY`` (unencrypted) or SubjectPublicKeyInfo ``PUBLIC KEY``,
  what ``openssl genpkey -algorithm ed25519`` writes;
- raw base64: the 32-byte private seed or the 32-byte public key, which fits in
  a Greengrass component configuration value.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.protocol.errors import KeyFormatError
from agent.protocol.topics import NAME_PATTERN

_KEY_ID = re.compile(NAME_PATTERN)
_RAW_KEY_BYTES = 32


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.match(key_id):
        raise KeyFormatError(f"key id {key_id!r} must be 1-128 of [A-Za-z0-9_:.-]")
    return key_id


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    """A new key pair in both text forms (keep the private halves secret)."""

    key_id: str
    private_pem: bytes
    public_pem: bytes
    private_b64: str
    public_b64: str

    def private_key(self) -> Ed25519PrivateKey:
        return load_private_key(self.private_pem)

    def public_key(self) -> Ed25519PublicKey:
        return load_public_key(self.public_pem)


def generate_keypair(key_id: str) -> KeyPair:
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    return KeyPair(
        key_id=check_key_id(key_id),
        private_pem=private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        public_pem=public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        private_b64=base64.b64encode(raw_private).decode("ascii"),
        public_b64=public_key_b64(public),
    )


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(data: bytes | str) -> Ed25519PrivateKey:
    """A private key from PEM or raw base64 text."""
    text = data.encode("ascii", errors="replace") if isinstance(data, str) else data
    if text.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as err:
            raise KeyFormatError(f"not a readable unencrypted PEM private key: {err}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError(f"PEM private key is {type(key).__name__}, not Ed25519")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(text, "private"))


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from PEM or raw base64 text."""
    text = data.encode("ascii", errors="replace") if isinstance(data, str) else data
    if text.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, TypeError) as err:
            raise KeyFormatError(f"not a readable PEM public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"PEM public key is {type(key).__name__}, not Ed25519")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key(text, "public"))


def read_private_key(path: Path) -> Ed25519PrivateKey:
    return load_private_key(_read(path))


def read_public_key(path: Path) -> Ed25519PublicKey:
    return load_public_key(_read(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise KeyFormatError(f"{path}: {err.strerror or err}") from err


def _raw_key(text: bytes, kind: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise KeyFormatError(f"{kind} key is neither PEM nor base64") from err
    if len(raw) != _RAW_KEY_BYTES:
        raise KeyFormatError(
            f"raw {kind} key is {len(raw)} bytes; an Ed25519 key is {_RAW_KEY_BYTES}")
    return raw
