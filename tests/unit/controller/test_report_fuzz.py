"""Fuzzing the controller's report ingest: ``FleetController.on_message(topic, payload)``
with random bytes, random topics, and valid reports of a small fleet mutated field by
field, while a rollout runs and is judged. It never raises, and every message lands in
exactly one count: ingested, ignored or rejected under a reason; what it ingests decodes
and names the thing of its topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from controller_rig import BOOT, CANDIDATE, OTHER_BOOT, Rig, controller_rig, profile, variant
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from agent.controller.plan import command_seq
from agent.wire.codec import decode, encode
from agent.wire.errors import ProtocolError
from agent.wire.messages import (
    Ack,
    Event,
    HealthReport,
    Heartbeat,
    Metrics,
    Register,
    UpMessage,
)
from agent.wire.topics import UP_CHANNELS, device_topic_parts

THINGS = ("dev-00", "dev-01", "dev-02", "dev-03", "stranger")
CHANNELS = (*UP_CHANNELS, "commands", "emf", "results", "nope")

json_values: SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)


@st.composite
def valid_messages(draw: DrawFn) -> UpMessage:
    env = {"thing": draw(st.sampled_from(THINGS)), "seq": draw(st.integers(0, 60)),
           "sent_at": 0}
    boot = draw(st.sampled_from((BOOT, OTHER_BOOT)))
    kind = draw(st.sampled_from(("metrics", "metrics", "event", "register", "heartbeat",
                                 "ack")))
    if kind == "metrics":
        step_seq = draw(st.sampled_from((None, command_seq(0, 1), command_seq(1, 0))))
        variants = {name: variant(
            draw(st.integers(0, 2**54)) if not draw(st.integers(0, 9)) else
            draw(st.integers(0, 500)),
            model=draw(st.sampled_from((CANDIDATE, "digits-v1"))),
            rollout="r-1" if step_seq is not None else None, rollout_seq=step_seq,
            series=draw(st.integers(0, 2)), errors=draw(st.integers(0, 20)),
            bucket=draw(st.integers(0, 79)))
            for name in draw(st.sets(st.sampled_from(("blue", "green")), max_size=2))}
        health = draw(st.sampled_from((None, {"soc_temp_c": 299.0}, {"rss_bytes": 2**40})))
        return Metrics(**env, boot_id=boot, variants=variants,
                       health=HealthReport(**health) if health else None)
    if kind == "event":
        return Event(**env, kind=draw(st.sampled_from(("guardrail_breach", "local_rollback",
                                                       "rejected_message"))),
                     detail="fuzzed", data={"rule": "p99", "version": draw(
                         st.sampled_from((CANDIDATE, "digits-v1")))})
    if kind == "register":
        return Register(**env, groups=["g"], agent_version="0.1.0", boot_id=boot,
                        profile=profile(draw(st.sampled_from(("rasp4b", "jetson_nano")))),
                        models={"blue": "digits-v1"})
    if kind == "heartbeat":
        return Heartbeat(**env, uptime_s=1.0, boot_id=boot, models={"blue": "digits-v1"})
    return Ack(**env, command_id="c" * 32, rollout_id="r-1", rollout_seq=command_seq(0, 0),
               outcome=draw(st.sampled_from(("ok", "failed", "rejected"))))


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:4]):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: DrawFn) -> bytes:
    """A valid message with one field replaced, deleted or added."""
    data = json.loads(encode(draw(valid_messages())))
    path = draw(st.sampled_from(_paths(data)))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(("replace", "replace", "delete", "add")))
    if action == "replace":
        parent[path[-1]] = draw(json_values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return json.dumps(data).encode()


Case = tuple[str, bytes, UpMessage | None, int, float]


@st.composite
def cases(draw: DrawFn) -> Case:
    """(topic, payload, a message sent as its device would instead, its seq after the
    device's last accepted one, seconds that pass before)."""
    advance_s = draw(st.sampled_from((0.0, 0.0, 0.5, 30.0)))
    if draw(st.integers(0, 9)) < 4:  # a device's own report, next in (or near) its sequence
        message = draw(valid_messages())
        delta = draw(st.sampled_from((1, 1, 1, 2, 0, -1, -5)))
        return "", b"", message, delta, advance_s
    if draw(st.integers(0, 9)) == 0:
        topic = draw(st.text(max_size=40))
    else:
        thing = draw(st.sampled_from(THINGS)) if draw(st.integers(0, 9)) else \
            draw(st.text(min_size=1, max_size=20).filter(lambda t: "/" not in t))
        topic = f"edge/{thing}/{draw(st.sampled_from(CHANNELS))}"
    payload = draw(st.one_of(
        valid_messages().map(encode), valid_messages().map(encode), mutated(), mutated(),
        st.binary(max_size=300),
        valid_messages().map(encode).flatmap(
            lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n]))))
    if draw(st.booleans()) and payload[:1] == b"{":  # on the topic its body names
        try:
            named = decode(payload, expect=UpMessage)
            topic = f"edge/{named.thing}/{named.channel}"
        except ProtocolError:
            pass
    return topic, payload, None, 0, advance_s


def _check_one(rig: Rig, topic: str, payload: bytes, message: UpMessage | None, delta: int,
               advance_s: float) -> None:
    c = rig.controller
    if message is not None:
        last = c.tracker.state(message.thing)
        message = message.model_copy(update={"seq": max(0, (last.seq if last else 0) + delta)})
        topic, payload = f"edge/{message.thing}/{message.channel}", encode(message)
    before = (c.received, c.ingested, c.ignored, sum(c.rejected.values()))
    rig.clock.now += advance_s
    c.on_message(topic, payload)
    if c.received % 7 == 0:
        c.tick()
    after = (c.received, c.ingested, c.ignored, sum(c.rejected.values()))
    # The controller hears its own commands too (the in-memory broker delivers them at
    # once, on this thread): they are the only messages besides the fuzzed one.
    received, ingested, ignored, rejected = (a - b for a, b in zip(after, before, strict=True))
    assert received >= 1 and received - 1 <= ignored
    assert ingested + ignored + rejected == received, "each message counted exactly once"
    assert rig.accounted() == c.received
    if ingested:
        message = decode(payload, expect=UpMessage)
        parts = device_topic_parts("edge", topic)
        assert parts == (message.thing, message.channel)


def _fuzz(tmp_path: Path, settings: Any) -> None:
    with controller_rig(tmp_path) as rig:
        rig.fleet(4)  # registered at seq 1: the fuzzed reports (seq 0-60) mostly follow
        rig.start(strategy={"type": "canary", "percent": 50, "bake_s": 1},
                  guardrails={"min_samples": 1, "max_soc_temp_c": 90.0,
                              "max_rss_bytes": 2**30})

        @settings
        @given(cases())
        def prop(case: Case) -> None:
            _check_one(rig, *case)

        prop()
        assert rig.controller.received > 0


def test_the_report_ingest_never_raises_and_counts_every_message(tmp_path: Path) -> None:
    _fuzz(tmp_path, BRIEF)


@pytest.mark.slow
def test_the_report_ingest_never_raises_and_counts_every_message_long(
        tmp_path: Path) -> None:
    _fuzz(tmp_path, LONG)
