"""Commands from the controller: verified and admitted by the protocol gate, then acted on.

Commands arrive on the transport's thread and are queued; one worker thread
handles them in order, so a slow command never holds up the transport and
never touches the inference thread. Every outcome is answered: an ack for an
admitted command, a ``rejected_message`` event for anything that fails the
gate (malformed, oversized, unsigned, forged, untrusted, revoked, for another
device, replayed, stale). A replayed command is answered with its first ack
again, so a controller that re-sends after a lost ack converges.

Every command is logged (logger ``edge_agent.commands``): its outcome at INFO
when applied, at WARNING when rejected or failed, and every gate rejection at
WARNING with its error, so a device's own log tells why it refused something.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agent.device.uplink.outbox import Outbox
from agent.wire.commands import Command
from agent.wire.errors import ProtocolError, ReplayError
from agent.wire.gate import CommandGate, rejection
from agent.wire.messages import Ack, Event, Outcome

AckScalar = str | int | float | bool | None
log = logging.getLogger("edge_agent.commands")


@dataclass(frozen=True)
class Result:
    """A handler's answer: the ack's ``outcome``, ``reason`` (for people) and ``data``
    (for the controller: ``code``, ``model``, ... see :class:`~agent.wire.messages.Ack`)."""

    outcome: Outcome
    reason: str = ""
    data: Mapping[str, AckScalar] = field(default_factory=lambda: MappingProxyType({}))


Handler = Callable[[Command], Result]
_MAX_REMEMBERED_ACKS = 1024


class CommandProcessor:
    def __init__(self, *, gate: CommandGate, outbox: Outbox,
                 handlers: dict[str, Handler], max_queue: int = 256) -> None:
        self.gate = gate
        self.outbox = outbox
        self.handlers = handlers
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(max_queue)
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._thread = threading.Thread(target=self._work, name="commands", daemon=True)
        self.rejected = 0
        self.handled = 0

    def start(self) -> None:
        self._thread.start()

    def on_message(self, topic: str, payload: bytes) -> None:
        """Transport callback: queue and return at once."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            log.warning("command queue full: message on %s dropped", topic)
            self.outbox.event("rejected_message", "command queue full: message dropped",
                              data={"code": "overload", "topic": topic[:256]})

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.process(*item)

    def process(self, topic: str, payload: bytes) -> None:
        try:
            command = self.gate.admit(payload)
        except ReplayError as err:
            log.warning("replayed command on %s: %s", topic, err)
            self._reack(err, topic)
            return
        except ProtocolError as err:
            log.warning("command on %s rejected (%s): %s", topic, err.code, err)
            self.rejected += 1
            self.outbox.send(Event, **rejection(err, topic=topic))
            return
        handler = self.handlers.get(command.action)
        if handler is None:
            result = Result("rejected", f"action {command.action!r} is not supported by this "
                                          "agent version")
        else:
            try:
                result = handler(command)
            except Exception as err:  # a failed action is acked, never fatal to the agent
                result = Result("failed", f"{type(err).__name__}: {err}"[:512])
        self.handled += 1
        self._log(command, result)
        ack = self.outbox.send(Ack, command_id=command.command_id,
                               rollout_id=command.rollout_id, rollout_seq=command.rollout_seq,
                               outcome=result.outcome, reason=result.reason,
                               data=dict(result.data))
        if ack is not None:
            self._acks[command.command_id] = ack
            while len(self._acks) > _MAX_REMEMBERED_ACKS:
                self._acks.popitem(last=False)

    @staticmethod
    def _log(command: Command, result: Result) -> None:
        level = logging.INFO if result.outcome == "ok" else logging.WARNING
        log.log(level, "command %s %s of rollout %s seq %d: %s — %s", command.action,
                command.command_id, command.rollout_id, command.rollout_seq, result.outcome,
                result.reason or "done")

    def _reack(self, err: ReplayError, topic: str) -> None:
        first = self._acks.get(err.related_id or "")
        if first is None:
            self.rejected += 1
            self.outbox.send(Event, **rejection(err, topic=topic))
            return
        self.outbox.send(Ack, command_id=first.command_id, rollout_id=first.rollout_id,
                         rollout_seq=first.rollout_seq, outcome=first.outcome,
                         reason=first.reason, data=first.data)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
