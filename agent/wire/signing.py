"""Ed25519 signatures on commands, and on any other JSON document (package manifests).

A signed document is a JSON object with two members of its own: ``key_id``
(which controller key signed it) and ``signature``, the base64 Ed25519
signature of the canonical JSON (:func:`~agent.wire.canonical.canonical_json`)
of the object *without* ``signature`` — ``key_id`` is covered, so a signature
cannot be passed off as another key's.

The device verifies what it is about to act on: the canonical form of the
validated command (``Command.unsigned()``), never raw bytes a lenient parser
might read differently. The codec refuses duplicate keys and NaN, so one
payload has one meaning.

:class:`TrustStore` checks, in order: signed at all, key revoked, key known,
signature valid; each failure has its own error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.core.errors import ConfigError
from agent.wire.canonical import canonical_json
from agent.wire.commands import Command
from agent.wire.errors import (
    BadSignatureError,
    MissingSignatureError,
    RevokedKeyError,
    UnknownKeyError,
)
from agent.wire.keys import (
    check_key_id,
    load_private_key,
    read_private_key,
    trusted_public_key,
)

KEY_ID_FIELD = "key_id"
SIGNATURE_FIELD = "signature"
_SIGNATURE_BYTES = 64

C = TypeVar("C", bound=Command)


def signed_bytes(doc: Mapping[str, Any]) -> bytes:
    """The bytes a document's signature covers: its canonical JSON without ``signature``."""
    return canonical_json({k: v for k, v in doc.items() if k != SIGNATURE_FIELD})


class Signer:
    """Signs with one controller key; ``key_id`` names it in every signed document."""

    def __init__(self, *, private_key: Ed25519PrivateKey, key_id: str) -> None:
        self._key = private_key
        self.key_id = check_key_id(key_id)

    @classmethod
    def from_text(cls, data: bytes | str, *, key_id: str) -> Signer:
        """From PEM or raw base64 text."""
        return cls(private_key=load_private_key(data), key_id=key_id)

    @classmethod
    def from_file(cls, path: Path, *, key_id: str) -> Signer:
        return cls(private_key=read_private_key(path), key_id=key_id)

    def sign_document(self, doc: Mapping[str, Any]) -> str:
        """The base64 signature of ``doc`` (which should carry this signer's ``key_id``)."""
        return base64.b64encode(self._key.sign(signed_bytes(doc))).decode("ascii")

    def seal(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``doc`` with this signer's ``key_id`` and the ``signature`` set."""
        sealed = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
        sealed[KEY_ID_FIELD] = self.key_id
        sealed[SIGNATURE_FIELD] = self.sign_document(sealed)
        return sealed

    def sign(self, command: C) -> C:
        """A copy of ``command`` carrying this signer's ``key_id`` and signature."""
        keyed = command.model_copy(update={KEY_ID_FIELD: self.key_id, SIGNATURE_FIELD: None})
        return keyed.model_copy(update={SIGNATURE_FIELD: self.sign_document(keyed.unsigned())})


class TrustStore:
    """The controller public keys a device trusts, and the key ids it no longer does."""

    def __init__(self, *, keys: Mapping[str, Ed25519PublicKey],
                 revoked: Iterable[str] = ()) -> None:
        self._keys = {check_key_id(key_id): key for key_id, key in keys.items()}
        self._revoked = frozenset(revoked)

    @classmethod
    def from_text(cls, keys: Mapping[str, bytes | str], *,
                  revoked: Iterable[str] = ()) -> TrustStore:
        """From key id -> PEM text, raw base64, or the path of a file holding either (a
        Greengrass configuration's ``trustedKeys``); see
        :func:`~agent.wire.keys.trusted_public_key`."""
        return cls(keys={key_id: trusted_public_key(key_id, value)
                         for key_id, value in keys.items()}, revoked=revoked)

    @classmethod
    def from_files(cls, paths: Mapping[str, Path], *,
                   revoked: Iterable[str] = ()) -> TrustStore:
        """From key id -> a PEM or base64 key file."""
        return cls(keys={key_id: trusted_public_key(key_id, Path(path))
                         for key_id, path in paths.items()}, revoked=revoked)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrustStore:
        """From ``{"keys": {key_id: text}, "revoked": [key_id, ...]}``."""
        keys = config.get("keys", {})
        revoked = config.get("revoked", [])
        unknown = set(config) - {"keys", "revoked"}
        if unknown:
            raise ConfigError(f"trust store: unknown setting(s) {', '.join(sorted(unknown))}")
        if not isinstance(keys, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str | bytes) for k, v in keys.items()):
            raise ConfigError("trust store: 'keys' must map key ids to key text")
        if not isinstance(revoked, list | tuple) or not all(isinstance(k, str) for k in revoked):
            raise ConfigError("trust store: 'revoked' must be a list of key ids")
        return cls.from_text(keys, revoked=revoked)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @property
    def revoked(self) -> frozenset[str]:
        return self._revoked

    def verify_document(self, doc: Mapping[str, Any], *, related_id: str | None = None) -> str:
        """Check the ``key_id``/``signature`` of ``doc``; the key id that signed it."""
        key_id = doc.get(KEY_ID_FIELD)
        signature = doc.get(SIGNATURE_FIELD)
        if not isinstance(key_id, str) or not isinstance(signature, str) \
                or not key_id or not signature:
            raise MissingSignatureError("not signed (needs key_id and signature)",
                                        related_id=related_id)
        if key_id in self._revoked:
            raise RevokedKeyError(f"signed by revoked key {key_id!r}", related_id=related_id)
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"signed by untrusted key {key_id!r}", related_id=related_id)
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadSignatureError("signature is not base64", related_id=related_id) from err
        if len(raw) != _SIGNATURE_BYTES:
            raise BadSignatureError(f"signature is {len(raw)} bytes, not {_SIGNATURE_BYTES}",
                                    related_id=related_id)
        try:
            key.verify(raw, signed_bytes(doc))
        except InvalidSignature as err:
            raise BadSignatureError("signature does not match the content",
                                    related_id=related_id) from err
        return key_id

    def verify(self, command: Command) -> str:
        """Check a command's signature; the key id that signed it."""
        return self.verify_document(command.model_dump(mode="json"),
                                    related_id=command.command_id)
