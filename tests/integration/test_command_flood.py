"""A running agent (real ``edge-agent serve``, real mosquitto) under attack on its command
topic: payloads made to hurt a parser are refused fast with their reasons, and a flood of
2,000 hostile messages a second (garbage, forged, unsigned, untrusted, misaddressed,
replayed, deeply nested, oversized) costs inference nothing, keeps the agent's memory
bounded, is answered in the event stream at a bounded rate with summaries of what was
dropped, and still lets the controller's signed command through."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command

from agent.device.app.command_limits import CommandLimits
from agent.tools.bench.flood_sender import FloodSender, hostile_payloads
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.codec import decode, encode
from agent.wire.commands import Command, StatusCommand
from agent.wire.fields import new_message_id
from agent.wire.keys import generate_keypair
from agent.wire.messages import Metrics, UpMessage
from agent.wire.signing import Signer

THING = "flood-1"
TOPIC = f"edge/{THING}/commands"
PACE = 400  # inferences/s: paced, so that the flood's cost shows as a missed pace
FLOOD_RATE = 2000.0
FLOOD_S = 4.0
SUMMARY_S = 1.0
LIMITS = CommandLimits()  # the defaults, as a device runs them


@dataclass
class Running:
    agent: AgentProcess
    sub: CloudSubscriber
    ctl: CloudPublisher
    signer: Signer
    broker: MosquittoBroker


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, built_models: Path,
            shared_broker: MosquittoBroker) -> Iterator[Running]:
    work = tmp_path_factory.mktemp("flood")
    keys = generate_keypair("ctl-flood")
    (work / "trusted.pem").write_bytes(keys.public_pem)
    (work / "agent.yaml").write_text(f"commands: {{summaryIntervalSeconds: {SUMMARY_S}}}\n")
    sub = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                          topic=f"edge/{THING}/#").start()
    agent = AgentProcess(thing=THING, model=built_models / "digits-v1", state_dir=work / "state",
                         broker_port=shared_broker.port, log_path=work / "agent.log",
                         rate=PACE, metrics_interval=0.5, extra=[
                             "--trusted-key", f"ctl-flood={work / 'trusted.pem'}",
                             "--config", str(work / "agent.yaml")]).start()
    sub.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= 3, 60, "agent up")
    ctl = CloudPublisher("127.0.0.1", shared_broker.port)
    yield Running(agent=agent, sub=sub, ctl=ctl,
                  signer=Signer(private_key=keys.private_key(), key_id="ctl-flood"),
                  broker=shared_broker)
    ctl.close()
    assert agent.stop() == 0, agent.log()
    sub.stop()


def _rejections(messages: list[UpMessage]) -> list[UpMessage]:
    return [m for m in messages if m.type == "event" and getattr(m, "kind", "") ==
            "rejected_message"]


def _inference_rate(metrics: list[Metrics]) -> float:
    first, last = metrics[0], metrics[-1]
    done = (last.variants["blue"].inferences_total - first.variants["blue"].inferences_total)
    return done / ((last.sent_at - first.sent_at) / 1000)


def _metrics_between(sub: CloudSubscriber, start: int, end: int) -> list[Metrics]:
    return [m for m in sub.messages[start:end] if isinstance(m, Metrics)]


def test_payloads_made_to_hurt_a_parser_are_refused_fast(running: Running) -> None:
    good = json.loads(signed_command(running.signer, StatusCommand, thing=THING,
                                     rollout_id="parse", rollout_seq=1))
    hostile = [
        ("malformed", "deeper than 32 levels", b"[" * 15_000),
        ("malformed", "deeper than 32 levels", b'{"a":' * 3000),
        ("oversized", "the limit is 16384", b"[" * 100_000),
        ("schema", "command_id", json.dumps({**good, "command_id": "c" * 12_000}).encode()),
        ("malformed", "not usable JSON",
         encode_with_number(good, b"9" * 5000)),
        ("schema", "rollout_seq", encode_with_number(good, b"1e999")),
    ]
    start = len(running.sub.messages)
    sent_at = time.monotonic()
    for _, _, payload in hostile:
        running.ctl.publish(TOPIC, payload)
    running.sub.wait_for(lambda ms: len(_rejections(ms[start:])) >= len(hostile), 20,
                         "one rejection per hostile payload")
    took = time.monotonic() - sent_at
    # The oversized one is refused on arrival, the others in order after decoding.
    answers = [(e.data["code"], e.detail)  # type: ignore[attr-defined]
               for e in _rejections(running.sub.messages[start:])]
    for code, text, _ in hostile:
        match = next((a for a in answers if a[0] == code and text in a[1]), None)
        assert match is not None, f"no {code} rejection naming {text!r} in {answers}"
        answers.remove(match)
    assert took < 10, f"refusing {len(hostile)} payloads took {took:.1f} s"
    assert running.agent.process is not None and running.agent.process.poll() is None


def encode_with_number(doc: dict[str, object], number: bytes) -> bytes:
    raw = json.dumps({**doc, "rollout_seq": 123456789}).encode()
    return raw.replace(b"123456789", number)


def _legit_sends(signer: Signer) -> tuple[str, Iterator[bytes]]:
    """The controller's way: the same command again until acked, each time under a new
    message id."""
    first = decode(signed_command(signer, StatusCommand, thing=THING, rollout_id="legit",
                                  rollout_seq=1), expect=Command)

    def again() -> Iterator[bytes]:
        while True:
            yield encode(signer.sign(first.model_copy(update={"id": new_message_id(),
                                                              "signature": None})))

    return first.command_id, again()


def test_a_flood_costs_no_inference_floods_no_uplink_and_lets_a_command_through(
        running: Running) -> None:
    sub, agent = running.sub, running.agent
    assert agent.process is not None
    process = psutil.Process(agent.process.pid)
    # A command the device applied, for the flood to replay.
    replayed = signed_command(running.signer, StatusCommand, thing=THING, rollout_id="seen",
                              rollout_seq=1)
    running.ctl.publish(TOPIC, replayed)
    sub.wait_for(lambda ms: any(m.type == "ack" for m in ms), 20, "the first ack")

    before = len(sub.messages)
    time.sleep(2.5)
    unloaded = _inference_rate(_metrics_between(sub, before, len(sub.messages)))
    rss_before = process.memory_info().rss

    flood = FloodSender(host="127.0.0.1", port=running.broker.port, topic=TOPIC,
                        payloads=hostile_payloads(thing=THING, signer=running.signer,
                                                  replayed=[replayed]),
                        rate=FLOOD_RATE).start()
    flood_start = len(sub.messages)
    started = time.monotonic()
    peak_rss = rss_before
    command_id, sends = _legit_sends(running.signer)
    acked_after: float | None = None
    try:
        while time.monotonic() - started < FLOOD_S or acked_after is None:
            elapsed = time.monotonic() - started
            assert elapsed < 40, "the controller's command was never acked during the flood"
            peak_rss = max(peak_rss, process.memory_info().rss)
            if acked_after is None and elapsed > 1.0:  # the burst is spent by now
                if any(m.type == "ack" and getattr(m, "command_id", "") == command_id
                       for m in sub.messages[flood_start:]):
                    acked_after = elapsed
                else:
                    running.ctl.publish(TOPIC, next(sends))
            time.sleep(0.1)
    finally:
        flood.stop()
    flood_s = time.monotonic() - started
    flood_end = len(sub.messages)
    loaded = _inference_rate(_metrics_between(sub, flood_start, flood_end))
    assert flood.sent >= 0.8 * FLOOD_RATE * flood_s, f"the flood ran at {flood.achieved_rate}/s"

    # Inference kept its pace.
    assert loaded >= 0.9 * unloaded, f"{loaded:.0f}/s under the flood, {unloaded:.0f}/s before"
    # Memory stayed bounded.
    assert peak_rss - rss_before < 64 * 2**20, \
        f"RSS grew {(peak_rss - rss_before) / 2**20:.0f} MiB under the flood"
    # The event stream carries a bounded number of rejections and the summaries.
    sub.wait_for(lambda ms: any(e.data.get("code") == "rate_limited"  # type: ignore[attr-defined]
                                for e in _rejections(ms[flood_end:])), 20,
                 "the summary after the flood")
    during = _rejections(sub.messages[flood_start:])
    summaries = [e for e in during if e.data["code"] == "rate_limited"]  # type: ignore[attr-defined]
    singles = len(during) - len(summaries)
    allowed = LIMITS.rejection_event_burst + LIMITS.rejection_events_per_minute / 60 * flood_s
    assert singles <= allowed + 2, f"{singles} rejection events for {flood.sent} messages"
    assert len(summaries) <= flood_s / SUMMARY_S + 2
    suppressed = sum(e.data["suppressed"] for e in summaries)  # type: ignore[attr-defined]
    assert suppressed >= 0.9 * flood.sent - singles - 1000, (suppressed, flood.sent)
    assert sum(e.data["unread"] for e in summaries) > flood.sent / 2  # type: ignore[attr-defined]
    acks = [m for m in sub.messages[flood_start:] if m.type == "ack"]
    assert len(acks) <= LIMITS.rejection_event_burst + 10, "re-acks of the replays are limited"
    # So are the agent's log lines.
    warnings = agent.log_path.read_text(errors="replace").count("rejected (")
    assert warnings <= 6 + allowed + 2
    # And inference goes on after it.
    after = len(sub.messages)
    sub.wait_for(lambda ms: sum(m.type == "metrics" for m in ms[after:]) >= 2, 20,
                 "metrics after the flood")
    assert sub.invalid == []
    print(f"flood {flood.achieved_rate:.0f} msg/s for {flood_s:.1f} s: inference "
          f"{loaded:.0f}/s vs {unloaded:.0f}/s, command acked after {acked_after:.1f} s, "
          f"RSS +{(peak_rss - rss_before) / 2**20:.1f} MiB, {singles} rejection events, "
          f"{suppressed} suppressed")
