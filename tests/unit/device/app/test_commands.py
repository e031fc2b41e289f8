"""CommandProcessor on its own, in-process: the real protocol gate (signature, replay guard)
and a real outbox on a spool, with recording handlers in place of the agent's. Every
admitted command is acked, every gate failure is a ``rejected_message`` event, and a
replay is answered with its first ack; the last test carries a command in and its ack out
over the in-memory transport."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.device.app.commands import CommandProcessor, Handler, Result
from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    Command,
    ConfirmCommand,
    PromoteCommand,
    StatusCommand,
    Target,
)
from agent.wire.fields import new_message_id
from agent.wire.gate import CommandGate
from agent.wire.keys import generate_keypair
from agent.wire.memory import MemoryBroker, MemoryTransport
from agent.wire.messages import Ack, Event, UpMessage
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.signing import Signer, TrustStore
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics

THING = "cmd-unit-1"
TOPIC = f"edge/{THING}/commands"


@dataclass
class Recorder:
    """A handler that records what it was given and answers ``result`` (or raises)."""

    result: Result = field(default_factory=lambda: Result("ok", "done", {"model": "m-1"}))
    error: Exception | None = None
    seen: list[Command] = field(default_factory=list)

    def __call__(self, command: Command) -> Result:
        self.seen.append(command)
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Rig:
    signer: Signer
    stranger: Signer
    guard: ReplayGuard
    gate: CommandGate
    outbox: Outbox
    spool: Spool
    promote: Recorder
    handlers: dict[str, Handler]
    processors: list[CommandProcessor] = field(default_factory=list)

    def processor(self, **kwargs: Any) -> CommandProcessor:
        processor = CommandProcessor(gate=self.gate, outbox=self.outbox,
                                     handlers=self.handlers, **kwargs)
        self.processors.append(processor)
        return processor

    def payload(self, cls: type[Command] = PromoteCommand, *, rollout: str = "r-1",
                seq: int = 1, signer: Signer | None = None, thing: str = THING,
                **fields: Any) -> bytes:
        command = cls(rollout_id=rollout, rollout_seq=seq, issued_at=0,
                      target=Target(kind="thing", name=thing), **fields)
        return encode((signer or self.signer).sign(command))

    def messages(self) -> list[UpMessage]:
        return [decode(e.payload, expect=UpMessage) for e in self.spool.peek(100_000)]

    def acks(self) -> list[Ack]:
        return [m for m in self.messages() if isinstance(m, Ack)]

    def rejections(self) -> list[Event]:
        return [m for m in self.messages()
                if isinstance(m, Event) and m.kind == "rejected_message"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    ours, theirs = generate_keypair("ctl-1"), generate_keypair("ctl-x")
    guard = ReplayGuard(thing=THING)
    gate = CommandGate(trust=TrustStore.from_text({"ctl-1": ours.public_pem}), guard=guard)
    spool = Spool(path=tmp_path / "spool.db")
    outbox = Outbox(stamper=Stamper(thing=THING, counter=SequenceCounter(
        path=tmp_path / "sequence")), topics=Topics(thing=THING), spool=spool)
    promote = Recorder()
    rig = Rig(signer=Signer(private_key=ours.private_key(), key_id="ctl-1"),
              stranger=Signer(private_key=theirs.private_key(), key_id="ctl-x"),
              guard=guard, gate=gate, outbox=outbox, spool=spool, promote=promote,
              handlers={"promote": promote})
    yield rig
    for processor in rig.processors:
        if processor._thread.is_alive():
            processor.stop()
    spool.close()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_an_admitted_command_is_handled_and_acked(rig: Rig) -> None:
    processor = rig.processor()
    payload = rig.payload(seq=3)
    processor.process(TOPIC, payload)
    sent = decode(payload, expect=Command)
    assert [c.command_id for c in rig.promote.seen] == [sent.command_id]
    assert isinstance(rig.promote.seen[0], PromoteCommand)
    (ack,) = rig.acks()
    assert (ack.command_id, ack.rollout_id, ack.rollout_seq) == (sent.command_id, "r-1", 3)
    assert (ack.outcome, ack.reason, ack.data) == ("ok", "done", {"model": "m-1"})
    assert (processor.handled, processor.rejected) == (1, 0)
    assert rig.guard.highest("r-1") == 3, "the gate recorded it as admitted"
    entry = rig.spool.peek(1)[0]
    assert entry.topic == f"edge/{THING}/ack"


def test_a_replayed_command_is_acked_again_not_handled_again(rig: Rig) -> None:
    processor = rig.processor()
    payload = rig.payload()
    processor.process(TOPIC, payload)
    processor.process(TOPIC, payload)  # the same bytes again, e.g. a QoS 1 duplicate
    assert len(rig.promote.seen) == 1
    first, again = rig.acks()
    assert (again.command_id, again.outcome, again.reason, again.data) == (
        first.command_id, first.outcome, first.reason, first.data)
    assert again.seq > first.seq, "a new message carrying the first outcome"
    assert (processor.handled, processor.rejected) == (1, 0)
    assert rig.rejections() == []


def test_a_command_re_sent_under_a_new_message_id_is_acked_again(rig: Rig) -> None:
    processor = rig.processor()
    payload = rig.payload()
    processor.process(TOPIC, payload)
    sent = decode(payload, expect=Command)
    resent = encode(rig.signer.sign(sent.model_copy(update={"id": new_message_id(),
                                                            "signature": None})))
    processor.process(TOPIC, resent)
    assert len(rig.promote.seen) == 1
    assert [a.command_id for a in rig.acks()] == [sent.command_id] * 2


def test_a_replay_whose_first_ack_is_not_known_is_rejected(rig: Rig) -> None:
    payload = rig.payload()
    rig.processor().process(TOPIC, payload)
    later = rig.processor()  # same replay guard, no acks remembered (a restart)
    later.process(TOPIC, payload)
    (event,) = rig.rejections()
    assert event.data == {"code": "replay", "topic": TOPIC}
    assert event.related_id == decode(payload, expect=Command).command_id
    assert (later.handled, later.rejected) == (0, 1)
    assert len(rig.promote.seen) == 1 and len(rig.acks()) == 1


def test_stale_commands_are_rejected_and_not_handled(rig: Rig) -> None:
    processor = rig.processor()
    processor.process(TOPIC, rig.payload(seq=2))
    processor.process(TOPIC, rig.payload(seq=1))  # below the rollout's mark
    processor.process(TOPIC, rig.payload(seq=2))  # the same seq under another command id
    rig.guard.retire("r-1")
    processor.process(TOPIC, rig.payload(seq=9))  # a finished rollout
    assert len(rig.promote.seen) == 1 and len(rig.acks()) == 1
    assert [e.data["code"] for e in rig.rejections()] == ["stale"] * 3
    assert (processor.handled, processor.rejected) == (1, 3)


def test_an_unknown_action_is_acked_rejected(rig: Rig) -> None:
    processor = rig.processor()
    processor.process(TOPIC, rig.payload(StatusCommand))
    (ack,) = rig.acks()
    assert (ack.outcome, ack.reason, ack.data) == (
        "rejected", "action 'status' is not supported by this agent version", {})
    assert processor.handled == 1 and rig.promote.seen == []


def test_a_handler_that_raises_is_acked_failed(rig: Rig) -> None:
    rig.promote.error = ValueError("boom")
    processor = rig.processor()
    processor.process(TOPIC, rig.payload())
    (ack,) = rig.acks()
    assert (ack.outcome, ack.reason) == ("failed", "ValueError: boom")
    processor.process(TOPIC, rig.payload(seq=2))  # the processor goes on
    assert len(rig.acks()) == 2


def test_a_refusal_keeps_its_code_in_the_ack(rig: Rig) -> None:
    rig.handlers["confirm"] = Recorder(Result("rejected", "nothing to confirm",
                                              {"code": "nothing_to_confirm", "model": "m-1"}))
    rig.processor().process(TOPIC, rig.payload(ConfirmCommand))
    (ack,) = rig.acks()
    assert (ack.outcome, ack.data) == ("rejected", {"code": "nothing_to_confirm",
                                                    "model": "m-1"})


def test_gate_failures_are_rejection_events(rig: Rig) -> None:
    processor = rig.processor()
    good = rig.payload()
    unsigned = encode(decode(good, expect=Command).model_copy(
        update={"signature": None, "key_id": None}))
    for payload in (b"{not json", unsigned, rig.payload(seq=2, thing="someone-else"),
                    rig.payload(seq=3, signer=rig.stranger)):
        processor.process(TOPIC, payload)
    assert [e.data["code"] for e in rig.rejections()] == [
        "malformed", "missing_signature", "wrong_target", "unknown_key"]
    assert all(e.data["topic"] == TOPIC for e in rig.rejections())
    assert rig.acks() == [] and rig.promote.seen == []
    assert (processor.handled, processor.rejected) == (0, 4)
    assert rig.guard.highest("r-1") is None, "nothing was admitted"


def test_the_worker_thread_handles_queued_messages_in_order(rig: Rig) -> None:
    processor = rig.processor()
    processor.start()
    payloads = [rig.payload(seq=seq) for seq in (1, 2, 3)]
    for payload in payloads:
        processor.on_message(TOPIC, payload)
    _wait(lambda: len(rig.acks()) == 3, "three acks")
    assert [a.rollout_seq for a in rig.acks()] == [1, 2, 3]
    processor.stop()
    assert not processor._thread.is_alive()


def test_a_full_queue_drops_the_message_with_an_overload_event(rig: Rig) -> None:
    processor = rig.processor(max_queue=1)  # not started: nothing takes from the queue
    processor.on_message(TOPIC, rig.payload(seq=1))
    processor.on_message(TOPIC, rig.payload(seq=2))
    (event,) = rig.rejections()
    assert event.data == {"code": "overload", "topic": TOPIC}
    assert event.detail == "command queue full: message dropped"


def test_every_outcome_is_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.commands")
    processor = rig.processor()
    payload = rig.payload()
    processor.process(TOPIC, payload)
    processor.process(TOPIC, b"{not json")
    records = [(r.levelno, r.getMessage()) for r in caplog.records
               if r.name == "edge_agent.commands"]
    command_id = decode(payload, expect=Command).command_id
    assert records[0] == (logging.INFO,
                          f"command promote {command_id} of rollout r-1 seq 1: ok — done")
    assert records[1][0] == logging.WARNING and "rejected (malformed)" in records[1][1]


def test_a_command_in_and_its_ack_out_over_the_memory_transport(rig: Rig) -> None:
    broker = MemoryBroker()
    device, controller = (MemoryTransport(broker=broker, client_id="device"),
                          MemoryTransport(broker=broker, client_id="controller"))
    for transport in (device, controller):
        transport.connect()
    received: list[tuple[str, bytes]] = []
    controller.subscribe(f"edge/{THING}/#",
                         lambda topic, payload: received.append((topic, payload)))
    processor = rig.processor()
    device.subscribe(TOPIC, processor.on_message)
    drainer = SpoolDrainer(spool=rig.spool, transport=device, rate_limit_per_s=0)
    processor.start()
    drainer.start()
    try:
        payload = rig.payload()
        controller.publish(TOPIC, payload).result(timeout=5)
        _wait(lambda: any(topic.endswith("/ack") for topic, _ in received), "the ack")
    finally:
        drainer.stop()
        processor.stop()
        device.close()
        controller.close()
    (ack_bytes,) = [data for topic, data in received if topic == f"edge/{THING}/ack"]
    ack = decode(ack_bytes, expect=Ack)
    assert (ack.command_id, ack.outcome) == (decode(payload, expect=Command).command_id, "ok")
    assert len(rig.promote.seen) == 1
