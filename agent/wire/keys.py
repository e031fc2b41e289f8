"""Ed25519 keys: generation and loading, from PEM files or raw base64 strings.

Two text forms are accepted everywhere a key is read:

- PEM: PKCS#8 ``PRIVATE KEY`` (unencrypted) or SubjectPublicKeyInfo ``PUBLIC KEY``,
  what ``openssl genpkey -algorithm ed25519`` writes;
- raw base64: the 32-byte private seed or the 32-byte public key, which fits in
  a Greengrass component configuration value.

A public key is read by one function, :func:`public_key_from`, wherever it comes from
(``serve --trusted-key ID=VALUE``, the agent configuration's ``trustedKeys``, the Lambda
handler's ``EDGE_TRUSTED_KEYS``, :class:`~agent.wire.signing.TrustStore`): the value is
PEM text, base64, or the path of a file holding either, and a value that is none of them
is a :class:`~agent.wire.errors.KeyFormatError` with the same text from every entry
point, e.g. ``trusted key 'ctl-1': neither PEM, base64 nor a readable key file (got
'ctl-1.pem')``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.wire.errors import KeyFormatError
from agent.wire.topics import NAME_PATTERN

_KEY_ID = re.compile(NAME_PATTERN)
_RAW_KEY_BYTES = 32
_PEM_BEGIN = "-----BEGIN"
# DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): this prefix, then the raw key.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_SPKI_BYTES = len(_SPKI_PREFIX) + _RAW_KEY_BYTES
_SHOWN_CHARS = 60  # of a malformed value, in its error
_SHOWN_CHARS_B64 = 40  # longer base64-like text is not shown (base64 of a 32-byte key: 44)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/=\s]+")


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


def public_key_from(value: str | bytes | Path, *, what: str = "public key") -> Ed25519PublicKey:
    """The Ed25519 public key ``value`` gives, in any of its accepted forms.

    A ``str`` is PEM (SubjectPublicKeyInfo) text, the raw 32-byte key in base64 (or the
    base64 body of the PEM without its armour lines), or the path of a file holding
    either; ``bytes`` are PEM or base64 text (a file's contents); a :class:`~pathlib.Path`
    is always a file. Every failure is a :class:`KeyFormatError` whose text starts with
    ``what`` (e.g. ``trusted key 'ctl-1'``) and shows the value given, unless it could be
    a mangled private key (a long run of base64), and never the contents of a file.
    """
    if isinstance(value, Path):
        return _public_key_file(value, what)
    if isinstance(value, bytes):
        return _inline_public_key(value.decode("utf-8", errors="replace"), what, source=None)
    text = value.strip()
    if not text.startswith(_PEM_BEGIN) and len(_b64(text) or b"") != _RAW_KEY_BYTES:
        path = _existing_file(text)
        if path is not None:
            return _public_key_file(path, what)
    return _inline_public_key(text, what, source=None)


def trusted_public_key(key_id: str, value: str | bytes | Path) -> Ed25519PublicKey:
    """The public key of trusted key ``key_id`` (:func:`public_key_from`).

    Every entry point that takes a trusted key (``serve --trusted-key``, ``trustedKeys``,
    ``EDGE_TRUSTED_KEYS``, :class:`~agent.wire.signing.TrustStore`) reads it here, so
    a malformed one gives the same :class:`KeyFormatError` from each, e.g.
    ``trusted key 'ctl-1': neither PEM, base64 nor a readable key file (got 'ctl-1.pem')``.
    """
    return public_key_from(value, what=f"trusted key {check_key_id(key_id)!r}")


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from PEM or raw base64 text, or a file path (:func:`public_key_from`)."""
    return public_key_from(data)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    return load_private_key(_read(path))


def read_public_key(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM or base64 file (:func:`public_key_from` with a path)."""
    return public_key_from(Path(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise KeyFormatError(f"{path}: {err.strerror or err}") from err


def _public_key_file(path: Path, what: str) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KeyFormatError(
            f"{what}: cannot read key file {str(path)!r}: {err.strerror or err}") from err
    return _inline_public_key(data.decode("utf-8", errors="replace"), what, source=path)


def _inline_public_key(text: str, what: str, *, source: Path | None) -> Ed25519PublicKey:
    """The key in PEM or base64 ``text``; ``source`` is the file it was read from, if any."""
    text = text.strip()
    where = f"{what}: key file {str(source)!r}" if source is not None else what
    if text.startswith(_PEM_BEGIN):
        if "PRIVATE KEY-----" in text.splitlines()[0]:
            # Said without echoing any of it: the private half must not reach a log.
            raise KeyFormatError(f"{where} holds a private key; give its public half "
                                 "(the .pub file of `edge-agent keys generate`)")
        try:
            key = serialization.load_pem_public_key(text.encode("utf-8"))
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise KeyFormatError(f"{where}: not a readable PEM public key") from err
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"{where}: PEM public key is {type(key).__name__}, "
                                 "not Ed25519")
        return key
    raw = _b64(text)
    if raw is not None and len(raw) == _RAW_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(raw)
    if raw is not None and raw.startswith(_SPKI_PREFIX) and len(raw) == _SPKI_BYTES:
        # The body of a PEM without its BEGIN/END lines (what a copy and paste often gives).
        return Ed25519PublicKey.from_public_bytes(raw[len(_SPKI_PREFIX):])
    if source is not None:  # a file's text is its own: the error tells no more than a length
        raise KeyFormatError(f"{where} holds neither PEM nor base64"
                             + ("" if raw is None else f" ({_length(raw)})"))
    raise KeyFormatError(f"{what}: neither PEM, base64 nor a readable key file "
                         f"(got {_shown(text, raw)})")


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if text else None
    except (binascii.Error, ValueError):
        return None


def _existing_file(text: str) -> Path | None:
    if not text or "\n" in text:
        return None
    path = Path(text).expanduser()
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. a name too long to be a path: then it is no file
        return None


def _shown(text: str, raw: bytes | None) -> str:
    """``text`` (``raw`` if it is base64) as an error may show it: a long run of base64
    characters could be a mangled private key, so only its length is told."""
    if len(text) > _SHOWN_CHARS_B64 and _B64_CHARS.fullmatch(text):
        return _length(raw) if raw is not None else \
            f"{len(text)} characters that are not valid base64"
    shown = repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")
    return shown if raw is None else f"{shown}, {_length(raw)}"


def _length(raw: bytes) -> str:
    return f"base64 of {len(raw)} bytes where an Ed25519 public key has {_RAW_KEY_BYTES}"


def _raw_key(text: bytes, kind: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise KeyFormatError(f"{kind} key is neither PEM nor base64") from err
    if len(raw) != _RAW_KEY_BYTES:
        raise KeyFormatError(
            f"raw {kind} key is {len(raw)} bytes; an Ed25519 key is {_RAW_KEY_BYTES}")
    return raw
