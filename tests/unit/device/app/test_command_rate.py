"""The command topics under a flood, in-process: the real gate, outbox and spool. Messages
over the rate are dropped unread, refusals are answered one by one only up to a rate and
summed up after, a payload over the size limit is never decoded, a legitimate command still
gets through, and a ``stage`` or ``rollback`` arriving while a handler runs is given to the
interrupt hook after the gate's preview."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.device.app.command_limits import CommandLimits
from agent.device.app.commands import CommandProcessor, Result
from agent.device.app.rate_limit import ReportLimiter, TokenBucket
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    Command,
    PromoteCommand,
    RollbackCommand,
    StageArgs,
    StageCommand,
    StatusCommand,
    Target,
)
from agent.wire.errors import BadSignatureError, ReplayError
from agent.wire.fields import new_message_id
from agent.wire.gate import CommandGate
from agent.wire.keys import generate_keypair
from agent.wire.messages import Ack, Event, UpMessage
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.signing import Signer, TrustStore
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics

THING = "rate-unit-1"
TOPIC = f"edge/{THING}/commands"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 3600  # never more than the burst
    assert sum(bucket.take() for _ in range(100)) == 5
    clock.now += 1
    assert bucket.take(4) and not bucket.take(3), "a large take spends several tokens"
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(rate=1, burst=0)


def test_a_report_limiter_counts_what_it_holds_back_and_sums_it_up_once_per_interval() -> None:
    clock = FakeClock()
    limiter = ReportLimiter(per_minute=60, burst=3, summary_interval_s=10, clock=clock)
    allowed = [limiter.allow("bad_signature") for _ in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    limiter.count("unread", 1000)
    assert limiter.summary() == {}, "not before the interval has passed"
    clock.now += 10
    assert limiter.summary() == {"bad_signature": 7, "unread": 1000}
    assert limiter.summary() == {}, "counts are handed over once"
    limiter.count("unread")
    clock.now += 5
    assert limiter.summary() == {}, "at most one summary per interval"
    clock.now += 5
    assert limiter.summary() == {"unread": 1}
    assert limiter.suppressed_total == 1008


@dataclass
class Rig:
    signer: Signer
    guard: ReplayGuard
    gate: CommandGate
    outbox: Outbox
    spool: Spool
    handled: list[Command] = field(default_factory=list)
    processors: list[CommandProcessor] = field(default_factory=list)

    def processor(self, limits: CommandLimits | None = None,
                  handler: Callable[[Command], Result] | None = None,
                  **kwargs: Any) -> CommandProcessor:
        def record(command: Command) -> Result:
            self.handled.append(command)
            return Result("ok", "done")

        handlers = {action: handler or record for action in ("promote", "rollback", "stage")}
        processor = CommandProcessor(gate=self.gate, outbox=self.outbox, handlers=handlers,
                                     limits=limits, **kwargs)
        self.processors.append(processor)
        return processor

    def payload(self, cls: type[Command] = PromoteCommand, *, seq: int = 1,
                rollout: str = "r-1", **fields: Any) -> bytes:
        return encode(self.signer.sign(cls(rollout_id=rollout, rollout_seq=seq, issued_at=0,
                                           target=Target(kind="thing", name=THING), **fields)))

    def messages(self) -> list[UpMessage]:
        return [decode(e.payload, expect=UpMessage) for e in self.spool.peek(100_000)]

    def events(self) -> list[Event]:
        return [m for m in self.messages()
                if isinstance(m, Event) and m.kind == "rejected_message"]

    def acks(self) -> list[Ack]:
        return [m for m in self.messages() if isinstance(m, Ack)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    keys = generate_keypair("ctl-1")
    guard = ReplayGuard(thing=THING)
    spool = Spool(path=tmp_path / "spool.db")
    rig = Rig(signer=Signer(private_key=keys.private_key(), key_id="ctl-1"), guard=guard,
              gate=CommandGate(trust=TrustStore.from_text({"ctl-1": keys.public_pem}),
                               guard=guard),
              outbox=Outbox(stamper=Stamper(thing=THING, counter=SequenceCounter(
                  path=tmp_path / "sequence")), topics=Topics(thing=THING), spool=spool),
              spool=spool)
    yield rig
    for processor in rig.processors:
        if processor._thread.is_alive():
            processor.stop()
    spool.close()


def _forged(rig: Rig, seq: int) -> bytes:
    good = json.loads(rig.payload(seq=seq))
    return json.dumps({**good, "rollout_seq": seq + 1}).encode()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_flood_is_read_at_the_rate_and_answered_with_a_summary(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.commands")
    limits = CommandLimits(rate_per_second=1, burst=50, rejection_event_burst=5,
                           rejection_events_per_minute=1, summary_interval_seconds=0.2)
    processor = rig.processor(limits)
    flood = [b"{not json", b"\x00" * 40, _forged(rig, 1),
             json.dumps({**json.loads(rig.payload(seq=2)), "signature": None}).encode()]
    started = time.perf_counter()
    for i in range(5000):
        processor.on_message(TOPIC, flood[i % len(flood)])
    arrival_s = time.perf_counter() - started
    assert processor._queue.qsize() <= 52, "only the burst (and what a second adds) is read"
    assert processor.dropped >= 4948 and processor.received == 5000
    assert arrival_s < 2.0, f"5000 arrivals took {arrival_s:.2f} s on the transport's thread"
    while not processor._queue.empty():
        item = processor._queue.get_nowait()
        assert item is not None
        processor.process(*item)
    events = rig.events()
    assert len(events) == 5, "answered one by one up to the burst"
    assert [e.data["code"] for e in events] == ["malformed", "malformed", "bad_signature",
                                                "missing_signature", "malformed"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5, "log lines are limited with their events"

    time.sleep(0.25)
    processor.summarise()
    summary = rig.events()[-1]
    assert summary.data["code"] == "rate_limited"
    assert summary.data["unread"] == processor.dropped
    assert summary.data["suppressed"] == processor.dropped + processor.rejected - 5
    assert summary.data["malformed"] + summary.data["bad_signature"] + summary.data[
        "missing_signature"] == processor.rejected - 5
    assert "dropped unread over the rate limit" in summary.detail
    processor.summarise()
    assert len(rig.events()) == 6, "one summary per interval, only when there is something"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 6


def test_bytes_a_second_are_limited_as_well_as_messages(rig: Rig) -> None:
    limits = CommandLimits(rate_per_second=1000, burst=1000, bytes_per_second=16 * 1024,
                           max_message_bytes=8 * 1024)
    processor = rig.processor(limits)
    big = b"[" + b"1," * 3000 + b"1]"  # 6 KB
    for _ in range(100):
        processor.on_message(TOPIC, big)
    assert processor._queue.qsize() <= 3, "16 KiB of burst holds two 6 KB payloads (or three)"
    assert processor.dropped >= 97


def test_a_payload_over_the_size_limit_is_refused_unread(rig: Rig) -> None:
    processor = rig.processor(CommandLimits(max_message_bytes=4096))
    processor.on_message(TOPIC, b"[" * 100_000)
    assert processor._queue.empty(), "never queued, never decoded"
    (event,) = rig.events()
    assert event.data == {"code": "oversized", "topic": TOPIC}
    assert event.detail == "command payload is 100000 bytes; the limit is 4096"
    assert processor.rejected == 1


def test_a_legitimate_command_is_handled_during_a_flood(rig: Rig) -> None:
    limits = CommandLimits(rate_per_second=200, burst=200, summary_interval_seconds=0.1)
    processor = rig.processor(limits)
    processor.start()
    legit = decode(rig.payload(seq=7, rollout="r-legit"), expect=Command)
    flood = [_forged(rig, seq) for seq in range(100, 150)] + [b"{bad"] * 50
    stop = threading.Event()

    def send_flood() -> None:  # about 2,000 messages a second
        while not stop.wait(0.01):
            for payload in flood[:20]:
                processor.on_message(TOPIC, payload)
            flood.append(flood.pop(0))

    flooder = threading.Thread(target=send_flood, daemon=True)
    flooder.start()
    try:
        _wait(lambda: processor.dropped > 0, "the flood over the burst")
        deadline = time.monotonic() + 20
        while not any(a.command_id == legit.command_id for a in rig.acks()):
            assert time.monotonic() < deadline, "the legitimate command was never acked"
            # As the controller does: the same command again, under a new message id.
            processor.on_message(TOPIC, encode(rig.signer.sign(
                legit.model_copy(update={"id": new_message_id(), "signature": None}))))
            time.sleep(0.05)
    finally:
        stop.set()
        flooder.join()
    assert [c.command_id for c in rig.handled] == [legit.command_id]
    _wait(lambda: any(e.data["code"] == "rate_limited" for e in rig.events()), "a summary")


def test_re_acks_of_a_replay_flood_are_limited(rig: Rig) -> None:
    processor = rig.processor(CommandLimits(rejection_event_burst=3,
                                            rejection_events_per_minute=1))
    payload = rig.payload()
    for _ in range(50):
        processor.process(TOPIC, payload)
    assert len(rig.handled) == 1
    assert len(rig.acks()) == 1 + 3, "the ack, then re-acks up to the burst"


def _blocking_handler(release: threading.Event, started: threading.Event) -> Callable[
        [Command], Result]:
    def handle(command: Command) -> Result:
        if isinstance(command, StageCommand):
            started.set()
            release.wait(10)
        return Result("ok", "done")

    return handle


def test_a_rollback_arriving_while_a_handler_runs_is_given_to_the_interrupt_hook(
        rig: Rig) -> None:
    release, started = threading.Event(), threading.Event()
    interrupted: list[tuple[Command, str]] = []
    processor = rig.processor(handler=_blocking_handler(release, started), interrupt=lambda c:
                              interrupted.append((c, threading.current_thread().name)))
    processor.start()
    stage = rig.payload(StageCommand, seq=1, args=StageArgs(
        url="https://example.com/p.tar.gz", sha256="0" * 64, version="m-2"))
    processor.on_message(TOPIC, rig.payload(RollbackCommand, rollout="r-0"))  # not busy
    _wait(lambda: len(rig.acks()) == 1, "the first rollback's ack")
    assert interrupted == [] and not processor.busy
    processor.on_message(TOPIC, stage)
    assert started.wait(10) and processor.busy
    forged = json.dumps({**json.loads(rig.payload(RollbackCommand, seq=3)),
                         "rollout_seq": 4}).encode()
    processor.on_message(TOPIC, forged)  # fails the preview: nothing happens now
    processor.on_message(TOPIC, rig.payload(StatusCommand, seq=5))  # not an interrupting one
    assert interrupted == []
    assert len(rig.events()) == 0, "a failed preview sends nothing"
    second = rig.payload(RollbackCommand, seq=6)
    processor.on_message(TOPIC, second)
    assert [c.command_id for c, _ in interrupted] == [decode(second, expect=Command).command_id]
    assert interrupted[0][1] == threading.current_thread().name, "on the arrival thread"
    assert rig.guard.highest("r-1") == 1, "the preview admitted nothing"
    release.set()
    _wait(lambda: len(rig.acks()) == 4, "acks of stage, status and the second rollback")
    assert [(a.rollout_id, a.rollout_seq) for a in rig.acks()] == [
        ("r-0", 1), ("r-1", 1), ("r-1", 5), ("r-1", 6)], "queued as well, handled in order"
    assert [e.data["code"] for e in rig.events()] == ["bad_signature"]
    assert processor.interrupts == 1


def test_interrupt_checks_are_bounded_and_a_failing_hook_is_contained(rig: Rig) -> None:
    release, started = threading.Event(), threading.Event()
    calls: list[Command] = []

    def hook(command: Command) -> None:
        calls.append(command)
        raise RuntimeError("the hook failed")

    processor = rig.processor(CommandLimits(interrupt_checks_per_second=1),
                              handler=_blocking_handler(release, started), interrupt=hook)
    processor.start()
    processor.on_message(TOPIC, rig.payload(StageCommand, seq=1, args=StageArgs(
        url="https://example.com/p.tar.gz", sha256="0" * 64, version="m-2")))
    assert started.wait(10)
    for seq in range(2, 22):
        processor.on_message(TOPIC, rig.payload(RollbackCommand, seq=seq))
    assert 1 <= len(calls) <= 3, f"{len(calls)} previews: bounded by the rate"
    release.set()
    _wait(lambda: processor._queue.empty() and not processor.busy, "the queue handled")


def test_the_gate_preview_checks_everything_and_records_nothing(rig: Rig) -> None:
    payload = rig.payload(RollbackCommand, seq=3)
    command = rig.gate.preview(payload)
    assert isinstance(command, RollbackCommand) and rig.guard.highest("r-1") is None
    assert rig.gate.admit(payload).command_id == command.command_id
    with pytest.raises(ReplayError, match="was received before"):
        rig.gate.preview(payload)
    with pytest.raises(BadSignatureError):
        rig.gate.preview(_forged(rig, 9))
