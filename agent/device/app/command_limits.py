"""How much the command topics may cost the agent (the agent's ``commands`` block).

Anyone who can publish on a device's command topics can send it anything, as fast as
the broker passes it on. These limits keep that from costing inference or flooding the
uplink: messages are admitted for reading at a bounded rate (messages and bytes a
second) *before* anything decodes them, and the excess is dropped unread and only
counted. That is safe for the controller's commands: it sends each one again until it
is acknowledged. Refusals are answered one by one only up to a rate; the rest are
summed up in one ``rejected_message`` event (``code: rate_limited``) per interval.

Greengrass configuration writes them camelCase (``commands: {ratePerSecond: 200}``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent.wire.fields import MAX_PAYLOAD_BYTES


class CommandLimits(BaseModel):
    """The rate and size limits of the command topics, and of the answers to refusals."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    rate_per_second: float = Field(
        default=200.0, gt=0, description="messages a second read from the command topics; "
                                         "more are dropped unread (counted)")
    burst: int = Field(default=200, ge=1, description="messages read at once above the rate "
                                                      "after a quiet spell")
    bytes_per_second: int = Field(
        default=128 * 1024, ge=1024, description="payload bytes a second read from the "
                                                 "command topics (parsing cost grows with "
                                                 "size); more are dropped unread")
    max_message_bytes: int = Field(
        default=16 * 1024, ge=1024, le=MAX_PAYLOAD_BYTES,
        description="a larger command payload is refused unread (commands are a few KiB)")
    queue_size: int = Field(default=256, ge=1, description="messages read but not yet "
                                                           "handled; more are dropped")
    rejection_events_per_minute: float = Field(
        default=30.0, ge=0, description="rejected_message events (and WARNING log lines) "
                                        "a minute for refused messages; the rest are counted")
    rejection_event_burst: int = Field(
        default=20, ge=1, description="rejected_message events at once above that rate")
    summary_interval_seconds: float = Field(
        default=10.0, gt=0, description="at most one summary event (code rate_limited) "
                                        "with the counts of what was dropped or not reported")
    interrupt_checks_per_second: float = Field(
        default=2.0, gt=0, description="stage or rollback commands checked on arrival while "
                                       "another command is being handled, so that they can "
                                       "cut it short")
