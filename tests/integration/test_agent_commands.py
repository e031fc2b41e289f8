"""Bad messages on the command topic: each is answered with a clear error event, nothing
changes, and inference never pauses. A good status request is answered and acked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command

from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.wire.commands import SetWeightsCommand, StatusCommand
from agent.wire.keys import generate_keypair
from agent.wire.signing import Signer

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
THING = "cmd-1"


@pytest.fixture
def running(tmp_path: Path, built_models: Path) -> Iterator[
        tuple[MosquittoBroker, CloudSubscriber, Signer, Signer]]:
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    trusted, revoked = generate_keypair("ctl-2026"), generate_keypair("ctl-2025")
    (tmp_path / "trusted.pem").write_bytes(trusted.public_pem)
    (tmp_path / "revoked.pem").write_bytes(revoked.public_pem)
    (tmp_path / "agent.yaml").write_text("revokedKeyIds: [ctl-2025]\n")
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic=f"edge/{THING}/#").start()
    agent = AgentProcess(thing=THING, model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=broker.port,
                         log_path=tmp_path / "agent.log", extra=[
                             "--trusted-key", f"ctl-2026={tmp_path / 'trusted.pem'}",
                             "--trusted-key", f"ctl-2025={tmp_path / 'revoked.pem'}",
                             "--config", str(tmp_path / "agent.yaml")]).start()
    sub.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "agent up")
    yield (broker, sub, Signer(private_key=trusted.private_key(), key_id="ctl-2026"),
           Signer(private_key=revoked.private_key(), key_id="ctl-2025"))
    assert agent.stop() == 0, agent.log()
    sub.stop()
    broker.stop()


def test_every_bad_command_is_rejected_with_its_reason(
        running: tuple[MosquittoBroker, CloudSubscriber, Signer, Signer]) -> None:
    broker, sub, signer, revoked = running
    topic = f"edge/{THING}/commands"
    good = json.loads(signed_command(signer, StatusCommand, thing=THING, rollout_id="r1",
                                     rollout_seq=5))
    untrusted = Signer(private_key=generate_keypair("x").private_key(), key_id="stranger")
    bad: list[tuple[str, bytes]] = [
        ("malformed", b"{not json"),
        ("malformed", b"\xff\xfe\x00"),
        ("schema", json.dumps({**good, "rollout_seq": "five"}).encode()),
        ("oversized", json.dumps({**good, "pad": "x" * (129 * 1024)}).encode()),
        ("unsupported_version", json.dumps({**good, "v": 2}).encode()),
        ("wrong_target", signed_command(signer, StatusCommand, thing="someone-else",
                                        rollout_id="r1", rollout_seq=6)),
        ("missing_signature", json.dumps({k: v for k, v in good.items()
                                          if k not in ("signature", "key_id")}).encode()),
        # edited after signing:
        ("bad_signature", json.dumps({**good, "rollout_seq": 99}).encode()),
        ("unknown_key", signed_command(untrusted, StatusCommand, thing=THING, rollout_id="r1",
                                       rollout_seq=7)),
        ("revoked_key", signed_command(revoked, StatusCommand, thing=THING, rollout_id="r1",
                                       rollout_seq=8)),
    ]
    ctl = CloudPublisher("127.0.0.1", broker.port)
    for _, payload in bad:
        ctl.publish(topic, payload)
    codes = [code for code, _ in bad]
    sub.wait_for(lambda ms: len([m for m in ms if m.type == "event"
                                 and m.kind == "rejected_message"]) >= len(bad), 30,
                 "one rejection per bad message")
    events = [m for m in sub.of_type("event") if m.kind == "rejected_message"]
    # An oversized message is refused on arrival, before the queue; the rest in order.
    assert sorted(e.data["code"] for e in events) == sorted(codes)
    assert [e.data["code"] for e in events if e.data["code"] != "oversized"] == \
        [code for code in codes if code != "oversized"]
    assert all(e.detail for e in events)
    assert sub.of_type("ack") == [], "nothing bad was acted on"

    # The good one, then the very same bytes again (a replay), then a stale rollout_seq.
    good_bytes = json.dumps(good).encode()
    ctl.publish(topic, good_bytes)
    ctl.publish(topic, good_bytes)
    ctl.publish(topic, signed_command(
        signer, StatusCommand, thing=THING, rollout_id="r1", rollout_seq=4))
    sub.wait_for(lambda ms: sum(m.type == "ack" for m in ms) >= 2 and
                 any(m.type == "event" and m.data.get("code") == "stale" for m in ms), 30,
                 "acks and the stale rejection")
    acks = sub.of_type("ack")
    assert [(a.command_id, a.outcome) for a in acks] == [(good["command_id"], "ok")] * 2
    states = [s for s in sub.of_type("state") if s.in_reply_to == good["command_id"]]
    assert len(states) == 1 and states[0].models == {"blue": "digits-v1"}

    # Weights with no staged candidate are refused, and nothing changes.
    ctl.publish(topic, signed_command(
        signer, SetWeightsCommand, thing=THING, rollout_id="r2", rollout_seq=1, blue=90,
        green=10))
    sub.wait_for(lambda ms: sum(m.type == "ack" for m in ms) >= 3, 30, "the third ack")
    assert sub.of_type("ack")[-1].outcome == "rejected"

    ctl.close()
    # Inference never paused while all this was handled.
    after = len(sub.of_type("metrics"))
    sub.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= after + 3, 30,
                 "metrics after the commands")
    metrics = sub.of_type("metrics")
    assert all(m.variants["blue"].inferences > 0 for m in metrics)
