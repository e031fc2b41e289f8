"""Commands from the controller: verified and admitted by the protocol gate, then acted on.

Commands arrive on the transport's thread and are queued; one worker thread
handles them in order, so a slow command never holds up the transport and
never touches the inference thread. Every outcome is answered: an ack for an
admitted command, a ``rejected_message`` event for anything that fails the
gate (malformed, oversized, unsigned, forged, untrusted, revoked, for another
device, replayed, stale). A replayed command is answered with its first ack
again, so a controller that re-sends after a lost ack converges.

A flood on the command topics costs little (see
:mod:`agent.device.app.command_limits`): on the transport's thread, before any
decoding, a payload over the size limit is refused and messages over the rate (in
messages and in bytes a second) are dropped unread; the controller sends each command
again until it is acknowledged. Answers to refused and replayed messages (events,
re-acks, their log lines) go out up to a rate; what was dropped or not answered is
counted and reported in one ``rejected_message`` event, ``data`` ``{code:
"rate_limited", suppressed: N, unread: M, <code>: n, ...}``, at most once per interval.

While a handler runs (:attr:`CommandProcessor.busy`), a ``stage`` or ``rollback``
that arrives is checked at once on the transport's thread
(:meth:`~agent.wire.gate.CommandGate.preview`, at a bounded rate) and, if the gate
would admit it, given to the ``interrupt`` callback, which may cut the running
command short; it is queued as well and handled in order after it.

Every command is logged (logger ``edge_agent.commands``): its outcome at INFO
when applied, at WARNING when rejected or failed, and each gate rejection that is
answered at WARNING with its error, so a device's own log tells why it refused something.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agent.device.app.command_limits import CommandLimits
from agent.device.app.rate_limit import ReportLimiter, TokenBucket
from agent.device.uplink.outbox import Outbox
from agent.wire.commands import Command
from agent.wire.errors import OversizedMessageError, ProtocolError, ReplayError
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
Interrupt = Callable[[Command], None]
INTERRUPTING_ACTIONS = frozenset({"stage", "rollback"})
_INTERRUPTING = re.compile(rb'"action"\s*:\s*"(?:stage|rollback)"')
_MAX_REMEMBERED_ACKS = 1024
_MIN_CHARGE_BYTES = 256  # a tiny message still costs a decode and a signature check
_UNREAD = "unread"  # the summary's count of messages dropped before reading


class CommandProcessor:
    """Admits command messages at a bounded rate, handles them in order, answers each."""

    def __init__(self, *, gate: CommandGate, outbox: Outbox, handlers: dict[str, Handler],
                 max_queue: int | None = None, limits: CommandLimits | None = None,
                 interrupt: Interrupt | None = None) -> None:
        """``interrupt`` is called on the transport's thread with a ``stage`` or
        ``rollback`` the gate would admit that arrives while a handler runs."""
        self.gate = gate
        self.outbox = outbox
        self.handlers = handlers
        self.limits = limits = limits or CommandLimits()
        self._interrupt = interrupt
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(
            max_queue or limits.queue_size)
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._thread = threading.Thread(target=self._work, name="commands", daemon=True)
        self._messages = TokenBucket(rate=limits.rate_per_second, burst=limits.burst)
        self._bytes = TokenBucket(rate=limits.bytes_per_second,
                                  burst=max(limits.bytes_per_second, limits.max_message_bytes))
        self._previews = TokenBucket(rate=limits.interrupt_checks_per_second,
                                     burst=max(1.0, 2 * limits.interrupt_checks_per_second))
        self._reports = ReportLimiter(per_minute=limits.rejection_events_per_minute,
                                      burst=limits.rejection_event_burst,
                                      summary_interval_s=limits.summary_interval_seconds)
        self._busy = False
        self.received = 0  # messages that arrived on the command topics
        self.dropped = 0  # of them, dropped unread (over the rate, or the queue full)
        self.rejected = 0  # refused by the gate or for their size
        self.handled = 0  # admitted and handled (acked)
        self.interrupts = 0  # interrupt callbacks made

    @property
    def busy(self) -> bool:
        """Whether a handler is running now."""
        return self._busy

    @property
    def suppressed(self) -> int:
        """Refusals and drops not answered one by one, since the start."""
        return self._reports.suppressed_total

    def start(self) -> None:
        self._thread.start()

    def on_message(self, topic: str, payload: bytes) -> None:
        """Transport callback: queue or drop at once, never waiting on the network (a
        refusal answered here, at the rate limit, is only spooled)."""
        self.received += 1
        size = len(payload)
        if size > self.limits.max_message_bytes:
            self._refuse(OversizedMessageError(
                f"command payload is {size} bytes; the limit is "
                f"{self.limits.max_message_bytes}"), topic)
            return
        if not (self._messages.take() and self._bytes.take(max(size, _MIN_CHARGE_BYTES))):
            self.dropped += 1
            self._reports.count(_UNREAD)
            return
        if (self._busy and self._interrupt is not None and _INTERRUPTING.search(payload)
                and self._previews.take()):
            self._check_interrupt(payload)
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            self.dropped += 1
            if self._reports.allow("overload"):
                log.warning("command queue full: message on %s dropped", topic)
                self.outbox.event("rejected_message", "command queue full: message dropped",
                                  data={"code": "overload", "topic": topic[:256]})

    def _check_interrupt(self, payload: bytes) -> None:
        try:
            command = self.gate.preview(payload)
        except ProtocolError:
            return  # refused when its turn comes, and answered then
        if command.action not in INTERRUPTING_ACTIONS:
            return
        self.interrupts += 1
        log.info("command %s %s of rollout %s seq %d arrived while another runs: interrupting",
                 command.action, command.command_id, command.rollout_id, command.rollout_seq)
        assert self._interrupt is not None
        try:
            self._interrupt(command)
        except Exception:  # the transport's thread must go on whatever the callback does
            log.exception("interrupting for command %s failed", command.command_id)

    def _work(self) -> None:
        wait_s = min(1.0, self.limits.summary_interval_seconds)
        while True:
            try:
                item = self._queue.get(timeout=wait_s)
            except queue.Empty:
                self.summarise()
                continue
            if item is None:
                return
            self.process(*item)
            self.summarise()

    def process(self, topic: str, payload: bytes) -> None:
        try:
            command = self.gate.admit(payload)
        except ReplayError as err:
            self._reack(err, topic)
            return
        except ProtocolError as err:
            self._refuse(err, topic)
            return
        handler = self.handlers.get(command.action)
        if handler is None:
            result = Result("rejected", f"action {command.action!r} is not supported by this "
                                          "agent version")
        else:
            self._busy = True
            try:
                result = handler(command)
            except Exception as err:  # a failed action is acked, never fatal to the agent
                result = Result("failed", f"{type(err).__name__}: {err}"[:512])
            finally:
                self._busy = False
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

    def summarise(self) -> None:
        """Send the summary of what was not answered one by one, if one is due."""
        counts = self._reports.summary()
        if not counts:
            return
        total = sum(counts.values())
        unread = counts.pop(_UNREAD, 0)
        refused = ", ".join(f"{n} {code}" for code, n in sorted(counts.items()))
        detail = (f"{total} message(s) on the command topics not answered one by one since "
                  f"the last summary: {unread} dropped unread over the rate limit"
                  + (f"; not answered: {refused}" if refused else ""))
        log.warning("%s", detail)
        self.outbox.event("rejected_message", detail[:1024],
                          data={"code": "rate_limited", "suppressed": total,
                                _UNREAD: unread, **dict(sorted(counts.items())[:29])})

    def _refuse(self, err: ProtocolError, topic: str) -> None:
        self.rejected += 1
        if not self._reports.allow(err.code):
            return
        log.warning("command on %s rejected (%s): %s", topic, err.code, err)
        self.outbox.send(Event, **rejection(err, topic=topic))

    @staticmethod
    def _log(command: Command, result: Result) -> None:
        level = logging.INFO if result.outcome == "ok" else logging.WARNING
        log.log(level, "command %s %s of rollout %s seq %d: %s — %s", command.action,
                command.command_id, command.rollout_id, command.rollout_seq, result.outcome,
                result.reason or "done")

    def _reack(self, err: ReplayError, topic: str) -> None:
        first = self._acks.get(err.related_id or "")
        if first is None:
            self._refuse(err, topic)
            return
        if not self._reports.allow("reacked"):
            return
        log.warning("replayed command on %s: %s", topic, err)
        self.outbox.send(Ack, command_id=first.command_id, rollout_id=first.rollout_id,
                         rollout_seq=first.rollout_seq, outcome=first.outcome,
                         reason=first.reason, data=first.data)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
