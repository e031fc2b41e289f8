"""The fleet controller at run time: ingest device reports, send signed decisions, advance
or roll back rollouts by their guardrails, and carry out the operator's requests.

One process, two threads: the transport's callback thread ingests (decodes,
drops stale reports by sequence and the controller's own clock, records acks),
and the caller's thread calls :meth:`FleetController.tick` about once a second.
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
from collections import OrderedDict
from collections.abc import Callable

from agent.controller.discovery import ANNOUNCE_ROLLOUT, ASK_AGAIN_S, Discovery
from agent.controller.operator_requests import act_on
from agent.controller.registry import FleetRegistry
from agent.controller.runner import KEEP_FINISHED, RolloutRunner, RunningRollout, parse_spec_json
from agent.controller.spec import RolloutSpec
from agent.controller.state import TERMINAL, ControllerState, OperatorRequest
from agent.wire.codec import decode, encode
from agent.wire.errors import ProtocolError
from agent.wire.messages import Ack, Event, Heartbeat, Metrics, Register, UpMessage
from agent.wire.senders import SenderTracker
from agent.wire.signing import Signer
from agent.wire.topics import EXTRA_CHANNELS, device_topics_filter
from agent.wire.transport import Transport, TransportError

__all__ = [
    "ANNOUNCE_ROLLOUT", "ASK_AGAIN_S", "DEVICE_BREACHES", "KEEP_FINISHED", "TERMINAL",
    "FleetController", "parse_spec_json",
]

log = logging.getLogger("edge_agent.fleet")
# A device that breaks a local guardrail rolls itself back at once; for the fleet that
# is a breach of the rollout as well.
DEVICE_BREACHES = ("guardrail_breach", "local_rollback")
# Topics under the device filter that carry no report: commands, and the extra channels.
_NOT_REPORTS = ("/commands", *(f"/{channel}" for channel in EXTRA_CHANNELS))


class FleetController:
    def __init__(self, *, transport: Transport, signer: Signer, state: ControllerState,
                 registry: FleetRegistry | None = None, prefix: str = "edge",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport, self.signer, self.state = transport, signer, state
        self.registry = registry or FleetRegistry(clock=clock)
        self.prefix, self.clock = prefix, clock
        self.tracker = SenderTracker(clock=clock)
        self.rollouts = RolloutRunner(transport=transport, signer=signer, state=state,
                                      registry=self.registry, prefix=prefix, clock=clock)
        self.discovery = Discovery(transport=transport, signer=signer, prefix=prefix,
                                   clock=clock)
        self._lock = threading.RLock()
        self.ingested = 0  # fresh messages taken in (duplicates and stale ones are not)
        self.metrics_ingested = 0
        self.ingest_cpu_s = 0.0  # CPU time spent in on_message, on the threads that ran it
        self.invalid = 0
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

    def on_message(self, topic: str, payload: bytes) -> None:
        started = time.thread_time()
        try:
            self._on_message(topic, payload)
        finally:
            self.ingest_cpu_s += time.thread_time() - started

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith(_NOT_REPORTS):
            return
        try:
            message = decode(payload, expect=UpMessage)
        except ProtocolError:
            self.invalid += 1
            return
        with self._lock:
            if not self.tracker.observe(message):
                return  # a duplicate or stale report: judged by sequence, never device time
            self.ingested += 1
            self._ingest(message)

    def _ingest(self, message: UpMessage) -> None:
        if isinstance(message, Register):
            self.registry.observe(message)
            self.state.save_registration(message.thing, encode(message))
            self.rollouts.catch_up(message.thing)
        elif isinstance(message, Heartbeat):
            if not self.registry.observe(message):
                self.discovery.ask_to_register(message.thing)
        elif isinstance(message, Metrics):
            self.metrics_ingested += 1
            self.rollouts.observe_metrics(message)
        elif isinstance(message, Ack):
            self.state.record_ack(message)
        elif isinstance(message, Event) and message.kind in DEVICE_BREACHES:
            self.rollouts.observe_breach(message)

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
