"""What the controller refuses before a report reaches a rollout: a per-device rate limit,
and the count of every refusal by its reason, logged at a bounded rate.

**Who sent it.** A subscriber sees a message's topic, never the MQTT client id of its
publisher, so the identity the controller can enforce is the topic's: a report on
``{prefix}/{thing}/{channel}`` must say ``thing`` and be a message of ``channel``
(:meth:`agent.controller.controller.FleetController.on_message`). On AWS IoT Core the
connection is bound to the topic by the device's policy: a policy allowing
``iot:Publish`` only on ``.../${iot:Connection.Thing.ThingName}/*`` lets a device's
certificate publish on its own topics alone, which makes the topic binding a binding to
the certificate. On a broker without such a policy (a local mosquitto) anyone who can
publish can use any topic; the controller still refuses a body naming another thing.

**Rate.** Each device (the thing of the topic, read before the payload is decoded) has a
token bucket of :attr:`IngestLimits.report_burst` tokens refilled at
:attr:`IngestLimits.report_rate_per_s`: a report past it is dropped at the cost of one
dictionary look-up, so one device flooding its topics cannot take the controller's time
from the others. A device sends a few messages a minute; the burst takes a spool backlog
after an outage (a backlog past it loses its older reports, whose counts are cumulative
and so carried by the newest). At most :attr:`IngestLimits.max_tracked_devices` buckets
are kept; the one touched least recently goes first (an evicted device starts full).

**Counting.** :class:`Rejections` counts every refused report under its reason (the
``REJECT_*`` names below and those of :mod:`agent.controller.report_checks`) and logs
at most one line per reason every :attr:`IngestLimits.log_every_s`, with the count since
the previous line and the latest thing and detail, quoted, so that a name or text made
of control characters cannot forge log lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("edge_agent.fleet")

REJECT_BAD_TOPIC = "bad_topic"  # not {prefix}/{thing}/{up channel}
REJECT_RATE_LIMITED = "rate_limited"  # past the device's report rate
REJECT_UNDECODABLE = "undecodable"  # the codec refused it (schema, JSON, size)
REJECT_THING_MISMATCH = "thing_mismatch"  # the body names another thing than the topic
REJECT_CHANNEL_MISMATCH = "channel_mismatch"  # a message of another kind than the topic's
REJECT_STALE = "stale"  # a duplicate or older seq (SenderTracker), replays included
QUIET_REASONS = frozenset({REJECT_STALE})  # expected (QoS 1 redelivery): logged at debug


@dataclass(frozen=True, kw_only=True)
class IngestLimits:
    """Settings of the controller's report ingest (every one has a safe default)."""

    report_rate_per_s: float = 20.0
    """Reports a second one device may send, on average (a device sends a metrics report
    every 10 s and a heartbeat every 30 s by default: this leaves a hundredfold margin)."""

    report_burst: int = 600
    """Reports one device may send at once before its rate applies (a spool backlog after
    an outage, a restart's register, state and acks)."""

    max_tracked_devices: int = 100_000
    """Devices whose rate is tracked at once (memory stays bounded whatever thing names
    reach the controller); above it the one heard least recently is forgotten."""

    log_every_s: float = 10.0
    """At most one log line per rejection reason in this many seconds."""

    def __post_init__(self) -> None:
        if not self.report_rate_per_s > 0 or self.report_burst < 1 \
                or self.max_tracked_devices < 1 or not self.log_every_s >= 0:
            raise ValueError("ingest limits need a positive rate, burst and device count "
                             "and a log interval of 0 or more")


class TokenBuckets:
    """Per device, a token bucket; thread-safe."""

    def __init__(self, limits: IngestLimits, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst = limits.report_rate_per_s, float(limits.report_burst)
        self._max = limits.max_tracked_devices
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, thing: str, *, now: float | None = None) -> bool:
        """Take one token of ``thing``'s bucket; False when it has none (drop the report)."""
        at = self._clock() if now is None else now
        with self._lock:
            held = self._buckets.get(thing)
            if held is None:
                tokens = self._burst
                if len(self._buckets) >= self._max:
                    self._buckets.popitem(last=False)
            else:
                tokens = min(self._burst, held[0] + max(0.0, at - held[1]) * self._rate)
                self._buckets.move_to_end(thing)
            allowed = tokens >= 1.0
            self._buckets[thing] = (tokens - 1.0 if allowed else tokens, at)
            return allowed

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class Rejections:
    """Refused reports by reason, logged at a bounded rate; thread-safe."""

    def __init__(self, *, log_every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._log_every_s = log_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def reject(self, reason: str, thing: str, detail: str = "") -> None:
        """Count one refused report of ``thing`` (as its topic names it)."""
        now = self._clock()
        with self._lock:
            self.counts[reason] += 1
            self._unlogged[reason] += 1
            last = self._logged_at.get(reason)
            if last is not None and now - last < self._log_every_s:
                return
            self._logged_at[reason] = now
            count, self._unlogged[reason] = self._unlogged[reason], 0
        level = logging.DEBUG if reason in QUIET_REASONS else logging.WARNING
        log.log(level, "refused %d report(s) (%s) since the last such line; latest from "
                "%r: %r", count, reason, thing[:140], detail[:300])

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())
