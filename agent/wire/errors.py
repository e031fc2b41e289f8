"""Why a message was refused. Each error's text is short: it is echoed back in a
``rejected_message`` event, and ``code`` names the reason for machines. This is the
wire's branch; the whole tree of the package's errors is drawn in
:mod:`agent.core.errors`::

    AgentError
    ├── ProtocolError                   a message that is refused and changes nothing
    │   ├── DecodeError                 bytes that are not a valid message
    │   │   ├── MalformedMessageError   not UTF-8, not JSON, or not a JSON object
    │   │   ├── OversizedMessageError   over AWS IoT Core's 128 KB payload limit
    │   │   ├── UnsupportedVersionError a schema version ``v`` this agent does not speak
    │   │   └── SchemaError             JSON that does not fit the schema (names the field)
    │   ├── SignatureError              a command the device must not trust
    │   │   ├── MissingSignatureError   no ``key_id`` or no ``signature``
    │   │   ├── UnknownKeyError         signed by a key the trust store does not hold
    │   │   ├── RevokedKeyError         signed by a revoked key
    │   │   └── BadSignatureError       forged, or edited after signing
    │   ├── WrongTargetError            for another thing, or a group this device is not in
    │   ├── ReplayError                 a message or command id seen before (re-ack, do nothing)
    │   └── StaleCommandError           a rollout_seq at or below the highest applied
    └── ConfigError
        ├── KeyFormatError              a key file or string that is not an Ed25519 key
        └── StateFileError              a state file (sequence, replay marks) unreadable or
                                        unwritable: going on could repeat numbers or replays
"""

from __future__ import annotations

from typing import ClassVar

from agent.core.errors import AgentError, ConfigError


class ProtocolError(AgentError):
    """A message that is refused; it changes nothing.

    ``related_id`` is the id of the refused message (or command) when it was
    readable, for the ``related_id`` of the ``rejected_message`` event.
    """

    code: ClassVar[str] = "protocol"

    def __init__(self, message: str, *, related_id: str | None = None) -> None:
        super().__init__(message)
        self.related_id = related_id


class DecodeError(ProtocolError):
    code = "decode"


class MalformedMessageError(DecodeError):
    code = "malformed"


class OversizedMessageError(DecodeError):
    code = "oversized"


class UnsupportedVersionError(DecodeError):
    code = "unsupported_version"


class SchemaError(DecodeError):
    code = "schema"


class SignatureError(ProtocolError):
    code = "signature"


class MissingSignatureError(SignatureError):
    code = "missing_signature"


class UnknownKeyError(SignatureError):
    code = "unknown_key"


class RevokedKeyError(SignatureError):
    code = "revoked_key"


class BadSignatureError(SignatureError):
    code = "bad_signature"


class WrongTargetError(ProtocolError):
    code = "wrong_target"


class ReplayError(ProtocolError):
    code = "replay"


class StaleCommandError(ProtocolError):
    code = "stale"


class KeyFormatError(ConfigError):
    """A key file or string is not an Ed25519 key in PEM or raw base64."""


class StateFileError(ConfigError):
    """A state file cannot be read or written; going on could repeat numbers or replays."""
