"""Results to AWS IoT Core: each one spooled on the results topic, in the spool's own
``results`` class, and delivered by the drainer like every other up message.

Results never crowd out the device's other messages: they have their own cap in the spool
(``results.spoolMaxBytes``; past it their oldest are dropped), and when the spool as a
whole is over its budget the oldest results go before any metrics report, while
registrations, heartbeats, events, state and acks are never dropped. Results are
committed without an fsync: a power cut may cost the last few, never the spool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.device.results.stream import Sink
from agent.device.uplink.spool import Priority, Spool, SpoolError
from agent.wire.fields import MAX_PAYLOAD_BYTES


class IotSink(Sink):
    """Spools each result's JSON on ``topic`` (QoS 1)."""

    destination = "iot"

    def __init__(self, spool: Spool, topic: str) -> None:
        super().__init__()
        self.spool = spool
        self.topic = topic
        self.spooled = 0
        self._dropped_before = spool.dropped_results()  # the count is kept across restarts

    def publish(self, result: dict[str, Any], payload: bytes,
                outputs: Sequence[np.ndarray]) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            self.fail(f"a result of {len(payload)} bytes is over AWS IoT Core's "
                      f"{MAX_PAYLOAD_BYTES}-byte limit (lower rawOutputsMaxBytes)")
            return
        try:
            if self.spool.put(self.topic, payload, qos=1, priority=Priority.RESULTS) is not None:
                self.spooled += 1
        except SpoolError as err:
            self.fail(str(err))

    def failures(self) -> int:
        """Results refused by the spool, or dropped from it for its budget or their cap."""
        try:
            dropped = self.spool.dropped_results() - self._dropped_before
        except SpoolError:
            dropped = 0
        return self.failed + max(dropped, 0)
