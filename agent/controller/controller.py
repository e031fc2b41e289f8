"""The fleet controller at run time: ingest device reports, send signed decisions, advance
or roll back rollouts by their guardrails, and carry out the operator's requests.

One process, two threads: the transport's callback thread ingests (decodes,
drops stale reports by sequence and the controller's own clock, records acks),
and the caller's thread calls :meth:`FleetController.tick` about once a second.

What a report must pass before it counts (:meth:`FleetController.on_message`), each
refusal counted in :attr:`FleetController.rejected` under its reason and logged at a
bounded rate: a device topic of an up channel; the per-device rate limit, keyed by the
topic's thing and applied before the payload is decoded
(:mod:`agent.controller.ingest_limits`); the codec; the topic's thing and channel, which
the body must repeat (identity is bound to the topic: a subscriber never sees the
publisher's client id, and on AWS IoT Core the device policy binds topic to
certificate); a ``seq`` above the last accepted from the thing (replays, duplicates and
older boots are stale); and, for metrics, figures that can follow the device's previous
report (:mod:`agent.controller.report_checks`). A device whose hardware class or
package key changes while a rollout runs is left out of that rollout's verdicts
(:meth:`agent.controller.runner.RolloutRunner.exclude`); how much a device's own breach
reports weigh is :mod:`agent.controller.breach_quorum`.
A tick acts on the operator requests in the database (``abort``, ``promote``,
``resume``, ``start``, written by any process: :mod:`agent.cli.rollout`;
:mod:`agent.controller.operator_requests`) and judges every running step
(:mod:`agent.controller.runner`, which also says how a rollout ends for each
device). Every decision is persisted (``ControllerState``) before it is sent, so
a restarted controller re-sends exactly what was not acknowledged, and a device
that comes back late gets the decision that applies to it now. Discovery
(:mod:`agent.controller.discovery`): devices register on start, on an
``announce`` command (sent to the spec's groups by :meth:`FleetController.announce`,
and to any device heard only by heartbeat) and their heartbeats carry their
profile and groups.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from agent.controller.discovery import ANNOUNCE_ROLLOUT, ASK_AGAIN_S, Discovery
from agent.controller.errors import ReportRejectedError
from agent.controller.ingest_limits import (
    REJECT_BAD_TOPIC,
    REJECT_CHANNEL_MISMATCH,
    REJECT_RATE_LIMITED,
    REJECT_STALE,
    REJECT_THING_MISMATCH,
    REJECT_UNDECODABLE,
    IngestLimits,
    Rejections,
    TokenBuckets,
)
from agent.controller.operator_requests import act_on
from agent.controller.registry import Device, FleetRegistry
from agent.controller.report_checks import MetricsHistory
from agent.controller.runner import KEEP_FINISHED, RolloutRunner, RunningRollout, parse_spec_json
from agent.controller.spec import RolloutSpec
from agent.controller.state import TERMINAL, ControllerState, OperatorRequest
from agent.wire.codec import decode, encode
from agent.wire.errors import ProtocolError
from agent.wire.messages import Ack, Event, Heartbeat, Metrics, Register, UpMessage
from agent.wire.senders import SenderTracker
from agent.wire.signing import Signer
from agent.wire.topics import EXTRA_CHANNELS, UP_CHANNELS, device_topic_parts, device_topics_filter
from agent.wire.transport import Transport, TransportError

__all__ = [
    "ANNOUNCE_ROLLOUT", "ASK_AGAIN_S", "DEVICE_BREACHES", "KEEP_FINISHED", "TERMINAL",
    "FleetController", "parse_spec_json",
]

log = logging.getLogger("edge_agent.fleet")
# A device that breaks a local guardrail rolls itself back at once; for the fleet that
# is a breach of the rollout as well.
DEVICE_BREACHES = ("guardrail_breach", "local_rollback")
# Channels under the device filter that carry no report: commands, and the extra channels.
_NOT_REPORTS = frozenset(("commands", *EXTRA_CHANNELS))


class FleetController:
    def __init__(self, *, transport: Transport, signer: Signer, state: ControllerState,
                 registry: FleetRegistry | None = None, prefix: str = "edge",
                 clock: Callable[[], float] = time.monotonic,
                 limits: IngestLimits | None = None,
                 on_ingest: Callable[[UpMessage], None] | None = None) -> None:
        """``limits``: the ingest's rate limit and logging (defaults: :class:`IngestLimits`);
        ``on_ingest``: called (under the controller's lock, so quickly) with every report
        that passed every check, before it is acted on."""
        self.transport, self.signer, self.state = transport, signer, state
        self.registry = registry or FleetRegistry(clock=clock)
        self.prefix, self.clock = prefix, clock
        self.tracker = SenderTracker(clock=clock)
        self.rollouts = RolloutRunner(transport=transport, signer=signer, state=state,
                                      registry=self.registry, prefix=prefix, clock=clock)
        self.discovery = Discovery(transport=transport, signer=signer, prefix=prefix,
                                   clock=clock)
        self._lock = threading.RLock()
        self.limits = limits or IngestLimits()
        self.on_ingest = on_ingest
        self._buckets = TokenBuckets(self.limits, clock=clock)
        self._rejections = Rejections(log_every_s=self.limits.log_every_s, clock=clock)
        self._history = MetricsHistory()
        self.received = 0  # every message on_message was handed
        self.ignored = 0  # on device topics that carry no report (commands, emf, results)
        self.ingested = 0  # fresh messages taken in (duplicates and stale ones are not)
        self.metrics_ingested = 0
        self.ingest_cpu_s = 0.0  # CPU time spent in on_message, on the threads that ran it
        self.invalid = 0  # refused by the codec (also in rejected["undecodable"])
        self.class_changes = 0  # devices seen changing hardware class or package key
        self._started_at = time.time()

    @property
    def running(self) -> dict[str, RunningRollout]:
        """The rollouts this controller runs (or holds paused), by id."""
        return self.rollouts.running

    @property
    def finished(self) -> OrderedDict[str, RunningRollout]:
        """The rollouts that ended here most recently, by id (the last few only)."""
        return self.rollouts.finished

    # ---- ingest (transport thread) ------------------------------------------------------

    def start(self, *, connect_timeout_s: float = 10.0) -> None:
        try:
            self.transport.connect(connect_timeout_s)
        except TransportError as err:
            log.warning("controller not connected yet: %s", err)
        with self._lock:
            for raw in self.state.registrations():  # devices known before a restart
                self.registry.observe(decode(raw, expect=Register))
        self.transport.subscribe(device_topics_filter(self.prefix), self.on_message)
        self.resume()

    @property
    def rejected(self) -> Counter[str]:
        """Reports refused at ingest, by reason (``rate_limited``, ``thing_mismatch``,
        ``stale``, ``counts_decreased``, ...: :mod:`agent.controller.ingest_limits`,
        :mod:`agent.controller.report_checks`). Every message handed to
        :meth:`on_message` ends up in exactly one of :attr:`ingested`, :attr:`ignored`
        and this count (a message still being ingested, in none yet)."""
        return self._rejections.counts

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take in one message from the transport; never raises for what it was sent."""
        started = time.thread_time()
        try:
            self._on_message(topic, payload)
        finally:
            self.ingest_cpu_s += time.thread_time() - started

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        parts = device_topic_parts(self.prefix, topic)
        if parts is None:
            self._rejections.reject(REJECT_BAD_TOPIC, topic, "not a device topic")
            return
        thing, channel = parts
        if channel in _NOT_REPORTS:
            self.ignored += 1
            return
        if not self._buckets.take(thing):
            self._rejections.reject(REJECT_RATE_LIMITED, thing, f"on {channel}")
            return
        if channel not in UP_CHANNELS:
            self._rejections.reject(REJECT_BAD_TOPIC, thing, f"channel {channel!r}")
            return
        try:
            message = decode(payload, expect=UpMessage)
        except ProtocolError as err:
            self.invalid += 1
            self._rejections.reject(REJECT_UNDECODABLE, thing, str(err))
            return
        if message.thing != thing:
            self._rejections.reject(REJECT_THING_MISMATCH, thing,
                                    f"a {message.type} naming {message.thing!r}")
            return
        if message.channel != channel:
            self._rejections.reject(REJECT_CHANNEL_MISMATCH, thing,
                                    f"a {message.type} on {channel}")
            return
        with self._lock:
            if not self.tracker.observe(message):
                # A duplicate or stale report (a replay, a redelivery, an older boot):
                # judged by sequence, never device time.
                self._rejections.reject(REJECT_STALE, thing, f"seq {message.seq}")
                return
            if isinstance(message, Metrics):
                try:
                    self._history.check(message)
                except ReportRejectedError as err:
                    self._rejections.reject(err.reason, thing, str(err))
                    return
            self.ingested += 1
            if self.on_ingest is not None:
                self.on_ingest(message)
            self._ingest(message)

    def _ingest(self, message: UpMessage) -> None:
        if isinstance(message, Register):
            before = self.registry.get(message.thing)
            self.registry.observe(message)
            self.state.save_registration(message.thing, encode(message))
            self._check_class(before, self.registry.get(message.thing))
            self.rollouts.catch_up(message.thing)
        elif isinstance(message, Heartbeat):
            before = self.registry.get(message.thing)
            if not self.registry.observe(message):
                self.discovery.ask_to_register(message.thing)
            self._check_class(before, self.registry.get(message.thing))
        elif isinstance(message, Metrics):
            self.metrics_ingested += 1
            self.rollouts.observe_metrics(message)
        elif isinstance(message, Ack):
            self.state.record_ack(message)
        elif isinstance(message, Event) and message.kind in DEVICE_BREACHES:
            self.rollouts.observe_breach(message)

    def _check_class(self, before: Device | None, after: Device | None) -> None:
        """A device that now says it is other hardware (or serves with another backend)
        keeps the place the running rollouts planned for it but no longer counts there."""
        if before is None or after is None or (before.hardware_class, before.package_key) \
                == (after.hardware_class, after.package_key):
            return
        self.class_changes += 1
        reason = (f"re-registered as class {after.hardware_class!r} (package "
                  f"{after.package_key!r}) after {before.hardware_class!r} (package "
                  f"{before.package_key!r}) while the rollout ran")
        if not self.rollouts.exclude(after.thing, reason):
            log.info("%r %s", after.thing, reason.replace(" while the rollout ran", ""))

    # ---- discovery ------------------------------------------------------------------------

    def announce(self, groups: list[str]) -> None:
        """Ask every device of ``groups`` to register now (a signed group command)."""
        self.discovery.announce(groups)

    # ---- operator actions (any thread) ---------------------------------------------------

    def start_rollout(self, spec: RolloutSpec) -> str:
        """Validate, plan and start ``spec``; nothing is recorded unless all of it passes.
        A rollout of this name that this controller runs already is carried on."""
        with self._lock:
            return self.rollouts.start(spec)

    def resume(self) -> None:
        """After a restart: re-plan running and paused rollouts and re-send what was not
        acknowledged."""
        with self._lock:
            self.rollouts.resume()

    # ---- schedule (caller's thread) -----------------------------------------------------

    def tick(self) -> list[tuple[OperatorRequest, str]]:
        """Act on the operator's requests, judge every running step; the requests acted
        on, with their effect."""
        handled: list[tuple[OperatorRequest, str]] = []
        with self._lock:
            self.state.controller_alive(os.getpid(), started_at=self._started_at)
            for request in self.state.pending_requests():
                effect = act_on(self.rollouts, request)
                self.state.handle_request(request.id, effect)
                handled.append((request, effect))
                log.info("request #%d %s %s: %s", request.id, request.action,
                         request.rollout_id, effect)
            self.rollouts.judge_all()
        return handled

    def stop(self) -> None:
        """Say that no controller runs on the database any more (operator commands tell)."""
        self.state.controller_stopped(os.getpid())
