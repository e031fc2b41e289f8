"""What a device does with command bytes before acting: decode, verify, admit.

Any failure raises a :class:`~agent.wire.errors.ProtocolError` (and no other
exception, whatever the bytes) and changes nothing; :func:`rejection` turns it
into the fields of a ``rejected_message`` event. A
:class:`~agent.wire.errors.ReplayError` is the one to answer by re-sending the
original ack (its ``related_id`` is the command id).

The replay guard's checks (target, replay, staleness) come before the signature's,
since they cost microseconds and a signature check over a hundred: a flood of
misaddressed or replayed commands costs little. They record nothing; only a command
whose signature verified is recorded as admitted.
"""

from __future__ import annotations

import re
from typing import Any

from agent.wire.codec import decode
from agent.wire.commands import Command
from agent.wire.errors import ProtocolError
from agent.wire.fields import MAX_TEXT
from agent.wire.replay import ReplayGuard
from agent.wire.signing import TrustStore
from agent.wire.topics import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


class CommandGate:
    def __init__(self, *, trust: TrustStore, guard: ReplayGuard) -> None:
        self.trust = trust
        self.guard = guard

    def admit(self, raw: bytes) -> Command:
        """The command in ``raw`` if it is well formed, signed by a trusted key, addressed
        to this device, and neither replayed nor stale; it is recorded as admitted."""
        command = decode(raw, expect=Command)
        self.guard.check(command)  # cheap, and records nothing: before the costly check
        self.trust.verify(command)
        self.guard.admit(command)
        return command

    def preview(self, raw: bytes) -> Command:
        """The command in ``raw`` if :meth:`admit` would admit it now, recording nothing:
        admitting it later (or refusing it then as a replay) is up to ``admit``."""
        command = decode(raw, expect=Command)
        self.guard.check(command)
        self.trust.verify(command)
        return command


def rejection(error: ProtocolError, *, topic: str | None = None) -> dict[str, Any]:
    """Fields of the ``rejected_message`` event for ``error`` (pass to ``Stamper.make``)."""
    data: dict[str, Any] = {"code": error.code}
    if topic is not None:
        data["topic"] = topic[:MAX_TEXT]
    related = error.related_id
    return {
        "kind": "rejected_message",
        "detail": str(error)[:MAX_TEXT],
        "related_id": related if related is not None and _NAME.match(related) else None,
        "data": data,
    }
