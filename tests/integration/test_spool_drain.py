"""The drainer against the in-memory broker: order, retries after outages and lost acks,
the rate limit, flush; and the in-memory broker's own topic matching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.spool import Spool
from agent.wire.memory import MemoryBroker, MemoryTransport
from agent.wire.topics import topic_matches
from agent.wire.transport import Transport, TransportError


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(path=tmp_path / "spool.db") as opened:
        yield opened


def _received(broker: MemoryBroker) -> list[int]:
    return [int(payload) for topic, payload in broker.delivered if topic.startswith("edge/")]


def _first_arrivals(values: list[int]) -> list[int]:
    seen: set[int] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


def _drainer(spool: Spool, transport: Transport, **options: float) -> SpoolDrainer:
    settings: dict[str, float] = {"rate_limit_per_s": 0, "publish_timeout_s": 0.3,
                                  "backoff_min_s": 0.01, "backoff_max_s": 0.05}
    settings.update(options)
    return SpoolDrainer(spool=spool, transport=transport, **settings)  # type: ignore[arg-type]


def test_memory_transport_is_a_transport() -> None:
    transport: Transport = MemoryTransport(broker=MemoryBroker())
    assert transport.name == "memory"


def test_drains_everything_in_order(spool: Spool) -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker=broker)
    transport.connect()
    for i in range(200):
        spool.put("edge/t1/metrics", str(i).encode())
    drainer = _drainer(spool, transport)
    drainer.start()
    try:
        assert drainer.flush(10.0) == 0
    finally:
        drainer.stop()
    assert _received(broker) == list(range(200))
    stats = drainer.stats()
    assert stats.sent == 200 and stats.retries == 0 and stats.last_error is None


def test_lost_acks_and_outages_give_duplicates_never_gaps_or_reordering(spool: Spool) -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker=broker)
    transport.connect()
    drainer = _drainer(spool, transport, max_in_flight=4)
    drainer.start()
    try:
        for i in range(60):
            if i == 10:
                broker.drop_next_acks(2)  # delivered, but the publisher never hears back
            if i == 25:
                broker.lose_next_publishes(1)  # never delivered
            if i == 40:
                broker.go_offline()
            if i == 50:
                broker.go_online()
            spool.put("edge/t1/events", str(i).encode())
            time.sleep(0.005)
        assert drainer.flush(10.0) == 0
    finally:
        drainer.stop()
    received = _received(broker)
    assert _first_arrivals(received) == list(range(60))
    stats = drainer.stats()
    assert stats.retries > 0 and stats.failures > 0 and stats.last_error
    assert len(received) - 60 <= stats.retries  # every duplicate is a counted retry


def test_not_connected_yet_then_connected(spool: Spool) -> None:
    broker = MemoryBroker(online=False)
    transport = MemoryTransport(broker=broker)
    transport.connect()  # an offline broker is not an error: it keeps trying
    assert not transport.is_connected()
    for i in range(20):
        spool.put("edge/t1/state", str(i).encode())
    drainer = _drainer(spool, transport)
    drainer.start()
    try:
        assert drainer.flush(0.2) == 20  # bounded: returns what remains
        broker.go_online()
        assert drainer.flush(10.0) == 0
    finally:
        drainer.stop()
    assert _received(broker) == list(range(20))


def test_rate_limit_paces_sends(spool: Spool) -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker=broker)
    transport.connect()
    for i in range(40):
        spool.put("edge/t1/metrics", str(i).encode())
    drainer = _drainer(spool, transport, rate_limit_per_s=200)
    started = time.monotonic()
    drainer.start()
    try:
        assert drainer.flush(10.0) == 0
    finally:
        drainer.stop()
    # 40 sends at 200/s with a burst of 20 cannot take less than ~0.1 s (a lower bound,
    # which a slow machine only makes easier to meet).
    assert time.monotonic() - started >= 0.09


def test_stop_leaves_unconfirmed_entries_in_the_spool(spool: Spool) -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker=broker)
    transport.connect()
    broker.drop_next_acks(1000)
    spool.put("edge/t1/ack", b"1")
    drainer = _drainer(spool, transport, publish_timeout_s=5.0)
    drainer.start()
    time.sleep(0.1)
    drainer.stop()
    assert spool.count() == 1 and broker.delivered


def test_subscriptions_and_wildcards() -> None:
    broker = MemoryBroker()
    device, cloud = MemoryTransport(broker=broker, client_id="d"), MemoryTransport(
        broker=broker, client_id="c")
    device.connect()
    cloud.connect()
    got: list[tuple[str, bytes]] = []
    cloud.subscribe("edge/+/metrics", lambda t, p: got.append((t, p)))
    cloud.subscribe("edge/groups/#", lambda t, p: got.append((t, p)))
    device.publish("edge/t1/metrics", b"a").result(1)
    device.publish("edge/t1/events", b"b").result(1)
    device.publish("edge/groups/g1/commands", b"c").result(1)
    assert got == [("edge/t1/metrics", b"a"), ("edge/groups/g1/commands", b"c")]
    with pytest.raises(TransportError):
        cloud.subscribe("edge/#/x", lambda t, p: None)
    broker.go_offline()
    with pytest.raises(TransportError):
        device.publish("edge/t1/metrics", b"x").result(1)


@pytest.mark.parametrize(("topic_filter", "topic", "match"), [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True),
    ("+", "a/b", False), ("#", "$SYS/x", False), ("a/+/c", "a//c", True),
])
def test_topic_matching(topic_filter: str, topic: str, match: bool) -> None:
    assert topic_matches(topic_filter, topic) is match
