"""The agent over direct MQTT to a real mosquitto: outages, offline starts, SIGKILL, budget."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess
from cloud import CloudSubscriber

from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.wire.codec import decode
from agent.wire.messages import UpMessage

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(workdir=tmp_path)
    yield b
    b.stop()


def _dedup(messages: list[UpMessage]) -> tuple[list[UpMessage], int]:
    seen: set[str] = set()
    unique = []
    for m in messages:
        if m.id not in seen:
            seen.add(m.id)
            unique.append(m)
    return unique, len(messages) - len(unique)


def _assert_every_seq_once_in_order(messages: list[UpMessage]) -> None:
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs), "out of order"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a sequence number is missing"


def _final_state(sub: CloudSubscriber, timeout_s: float = 60) -> None:
    sub.wait_for(lambda ms: any(m.type == "state" for m in ms), timeout_s,
                 "the final state report")


def test_broker_restarted_five_times_loses_and_reorders_nothing(
        broker: MosquittoBroker, tmp_path: Path, built_models: Path) -> None:
    broker.start()
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic="edge/out-1/#").start()
    agent = AgentProcess(thing="out-1", model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=broker.port,
                         log_path=tmp_path / "agent.log").start()
    try:
        sub.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "first metrics")
        for _ in range(5):
            broker.stop()
            time.sleep(1.0)  # the agent keeps serving and spooling meanwhile
            broker.start()
            time.sleep(1.5)
        assert agent.stop() == 0, agent.log()
        _final_state(sub)
    finally:
        sub.stop()
    unique, duplicates = _dedup(sub.messages)
    print(f"duplicates dropped after de-duplication by message id: {duplicates}")
    assert sub.invalid == []
    _assert_every_seq_once_in_order(unique)
    assert sum(m.type == "metrics" for m in unique) >= 20
    # Inference never paused: every metrics window counted inferences.
    assert all(m.variants["blue"].inferences > 0 for m in unique if m.type == "metrics")


def test_offline_start_then_broker_delivers_the_whole_backlog(
        broker: MosquittoBroker, tmp_path: Path, built_models: Path) -> None:
    agent = AgentProcess(thing="off-1", model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=broker.port,
                         log_path=tmp_path / "agent.log").start()
    time.sleep(3.0)  # no broker at all: everything waits in the spool
    broker.start()
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic="edge/off-1/#").start()
    try:
        unique = sub.wait_for(lambda ms: any(m.type == "register" for m in ms) and
                              sum(m.type == "metrics" for m in ms) >= 14, 60,
                              "the offline backlog")
        assert unique[0].type == "register", "the backlog arrives in order, from the start"
        assert agent.stop() == 0, agent.log()
        _final_state(sub)
    finally:
        sub.stop()
    unique, _ = _dedup(sub.messages)
    _assert_every_seq_once_in_order(unique)


def _spooled(state_dir: Path) -> list[UpMessage]:
    db = sqlite3.connect(state_dir / "spool.db")
    try:
        return [decode(row[0], expect=UpMessage)
                for row in db.execute("SELECT payload FROM messages ORDER BY id")]
    finally:
        db.close()


def test_sigkill_loses_nothing_that_reached_the_spool(
        broker: MosquittoBroker, tmp_path: Path, built_models: Path) -> None:
    state = tmp_path / "state"
    first = AgentProcess(thing="kill-1", model=built_models / "digits-v1", state_dir=state,
                         broker_port=broker.port, log_path=tmp_path / "agent.log").start()
    time.sleep(3.0)
    first.kill()  # offline, so everything it produced is still in the spool
    pending = _spooled(state)
    assert len(pending) >= 10
    broker.start()
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic="edge/kill-1/#").start()
    second = AgentProcess(thing="kill-1", model=built_models / "digits-v1", state_dir=state,
                          broker_port=broker.port, log_path=tmp_path / "agent.log").start()
    try:
        ids = {m.id for m in pending}
        sub.wait_for(lambda ms: ids <= {m.id for m in ms}, 60, "every spooled message")
        assert second.stop() == 0, second.log()
        _final_state(sub)
    finally:
        sub.stop()
    unique, _ = _dedup(sub.messages)
    boots = [m.boot_id for m in unique if m.type == "register"]
    assert len(boots) == 2 and boots[0] != boots[1]
    # The restarted agent's numbers continue above the killed one's (never reused).
    assert min(m.seq for m in unique if getattr(m, "boot_id", boots[1]) == boots[1]) > \
        max(m.seq for m in pending)


def test_tiny_budget_keeps_critical_messages_and_counts_dropped_metrics(
        broker: MosquittoBroker, tmp_path: Path, built_models: Path) -> None:
    agent = AgentProcess(thing="bud-1", model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=broker.port,
                         log_path=tmp_path / "agent.log", metrics_interval=0.05,
                         heartbeat_interval=0.2, extra=["--config", str(_budget(tmp_path))])
    agent.start()
    time.sleep(4.0)  # a long outage for this budget
    broker.start()
    sub = CloudSubscriber(host="127.0.0.1", port=broker.port, topic="edge/bud-1/#").start()
    try:
        sub.wait_for(lambda ms: any(m.type == "event" and m.kind == "spool_dropped"
                                    for m in ms), 60, "the spool_dropped event")
        time.sleep(1.0)
        assert agent.stop() == 0, agent.log()
        _final_state(sub)
    finally:
        sub.stop()
    unique, _ = _dedup(sub.messages)
    seqs = sorted(m.seq for m in unique)
    missing = set(range(seqs[0], seqs[-1] + 1)) - set(seqs)
    assert missing, "the budget should have forced drops"
    dropped = sum(int(m.data["count"]) for m in unique
                  if m.type == "event" and m.kind == "spool_dropped")
    # Every missing number is a reported, dropped metrics report. A report can also be
    # dropped for the budget while its publish is already in flight (the drain hands out a
    # few at a time, unacknowledged): counted as dropped, it may still arrive.
    assert len(missing) <= dropped <= len(missing) + 5, (dropped, len(missing))
    heartbeats = [m for m in unique if m.type == "heartbeat"]
    assert unique[0].type == "register" and len(heartbeats) >= 15


def _budget(tmp_path: Path) -> Path:
    path = tmp_path / "budget.yaml"
    path.write_text("spoolMaxBytes: 24000\n")
    return path
