"""Field types shared by every message schema, and the strict base model.

Strict validation on purpose: ``"5"`` is not a sequence number and ``true`` is
not a weight. Names follow AWS IoT thing-name rules (ASCII, so they are also
valid CloudWatch dimension values).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.wire.topics import NAME_PATTERN

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 128 * 1024  # AWS IoT Core's limit on an MQTT payload
MAX_SEQ = 2**63 - 1
MAX_TEXT = 1024  # free text (event detail, ack reason) stays short

ThingName = Annotated[str, Field(pattern=NAME_PATTERN)]
GroupName = Annotated[str, Field(pattern=NAME_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]  # ids, versions, rollout ids
MessageId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]  # uuid4().hex
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
UnixMillis = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Count = Annotated[int, Field(ge=0, le=MAX_SEQ)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Percent = Annotated[int, Field(ge=0, le=100)]

Variant = Literal["blue", "green"]
VariantMode = Literal["serve", "shadow", "weighted"]


def new_message_id() -> str:
    return uuid.uuid4().hex


class Schema(BaseModel):
    """Base of every wire model: unknown fields, coercion, NaN and mutation are refused."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, validate_default=False
    )
