"""The destinations of a result stream: IoT Core through the spool, local pub/sub over an
IPC connection (its backpressure and refusals), the shared-memory ring; and the settings
that build them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agent.core.model_layout import TensorSpec
from agent.device.app.config import load_config
from agent.device.results.build import ShmSink, build_stream
from agent.device.results.config import ResultsConfig, resolve_topic
from agent.device.results.iot import IotSink
from agent.device.results.local_pubsub import LocalPubSubSink
from agent.device.results.shm_ring import ResultRingReader
from agent.device.uplink.spool import Priority, Spool, SpoolFullError
from agent.wire.results import parse_result
from agent.wire.topics import Topics

SPECS = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),)
OUT = (np.array([[0.1, 0.8, 0.1]], np.float32),)


def result(seq: int = 1, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "v": 1, "type": "result", "thing": "cam-1", "run": "a" * 32, "seq": seq,
        "model": "m", "version": "m-1", "variant": "green", "source": "video",
        "frame": {"id": 9, "time": 1700000000.5},
        "top_k": [{"index": 1, "label": "green", "score": 0.8}]}
    found.update(changes)
    return found


def payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_iot_results_are_spooled_in_their_own_class(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "s.db", results_budget_bytes=400) as spool:
        sink = IotSink(spool, "edge/cam-1/results")
        for seq in range(1, 6):
            sink.publish(result(seq), payload(result(seq)), OUT)
        entries = spool.peek(10)
        assert {(e.topic, e.priority, e.qos) for e in entries} == \
            {("edge/cam-1/results", Priority.RESULTS, 1)}
        assert parse_result(entries[-1].payload).seq == 5
        assert sink.spooled == 5
        assert sink.failures() == 5 - len(entries) > 0  # what the cap dropped counts
        sink.publish(result(), b"x" * (128 * 1024 + 1), OUT)
        assert sink.failures() == 5 - len(entries) + 1

        def full(*_args: object, **_kwargs: object) -> None:
            raise SpoolFullError("spool put failed: no space left")

        spool.put = full  # type: ignore[method-assign]
        sink.publish(result(), payload(result()), OUT)  # a full disk: refused, counted
        assert sink.failed == 2 and sink.spooled == 5


class FakeConnection:
    """An IpcConnection stand-in: ``send`` hands back a future the test settles."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.futures: list[Future[None]] = []

    def send(self, what: str, request: Callable[[Any], Any], *, late: str) -> Future[None]:
        client = FakeClient()
        request(client)
        self.calls.append((what, client.sent))
        future: Future[None] = Future()
        self.futures.append(future)
        return future


class FakeClient:
    sent: tuple[str, Any] | None = None

    def publish_to_topic_async(self, *, topic: str, publish_message: Any) -> None:
        self.sent = (topic, publish_message)


def test_local_publishes_are_json_messages_with_a_bounded_number_in_flight() -> None:
    connection = FakeConnection()
    sink = LocalPubSubSink(connection, "edge/cam-1/results", max_in_flight=2)  # type: ignore[arg-type]
    for seq in range(1, 5):
        sink.publish(result(seq), b"", OUT)
    assert len(connection.calls) == 2 and sink.failed == 2  # two over the limit
    topic, message = connection.calls[0][1]
    assert topic == "edge/cam-1/results"
    assert message.json_message.message == result(1) and message.binary_message is None
    connection.futures[0].set_result(None)
    from agent.wire.transport import TransportError

    connection.futures[1].set_exception(TransportError("UnauthorizedError: not allowed"))
    assert sink.delivered == 1 and sink.failed == 3
    sink.publish(result(5), b"", OUT)  # room again
    assert len(connection.calls) == 3
    connection.futures[2].set_result(None)
    sink.close(timeout_s=0.1)
    assert sink.delivered == 2


def test_the_ring_sink_writes_each_result_and_the_builder_names_the_ring() -> None:
    name = f"edge-results-test-{uuid.uuid4().hex[:8]}"
    settings = ResultsConfig.model_validate({"local": False, "shmRing": name, "shmSlots": 4})
    stream = build_stream(settings, topics=Topics("cam-1"), model="m", metadata=None,
                          outputs=SPECS, source=object(), version="m-1")
    assert stream is not None and [s.destination for s in stream.sinks] == ["shm"]
    sink = stream.sinks[0]
    assert isinstance(sink, ShmSink)
    reader = ResultRingReader(name)
    try:
        sink.publish(result(1), b"", OUT)
        sink.publish(result(2, top_k=[]), b"", OUT)
        first, second = reader.read(1), reader.read(2)
        assert first is not None and second is not None
        assert (first.variant, first.version, first.top1, first.frame_id) == \
            ("green", "m-1", 1, 9)
        assert second.top1 is None and second.score is None
        assert np.array_equal(first.outputs["probs"], OUT[0])
        sink.publish(result(3), b"", (np.zeros((1, 4), np.float32),))
        assert sink.failed == 1 and reader.written == 2
    finally:
        reader.close()
        stream.stop()


def test_the_builder_publishes_only_where_it_can(tmp_path: Path) -> None:
    topics = Topics("cam-1", prefix="fleet")

    def build(raw: dict[str, Any], **parts: Any) -> list[str] | None:
        stream = build_stream(ResultsConfig.model_validate(raw), topics=topics, model="m",
                              metadata=None, outputs=SPECS, source=object(), version="v",
                              **parts)
        return None if stream is None else [s.destination for s in stream.sinks]

    with Spool(path=tmp_path / "s.db") as spool:
        assert build({}) is None  # local only, and no nucleus
        assert build({"enabled": False, "iot": True}, spool=spool) is None
        assert build({"iot": True}, spool=spool) == ["iot"]
        stream = build_stream(ResultsConfig.model_validate({"iot": True}), topics=topics,
                              model="m", metadata=None, outputs=SPECS, source=object(),
                              version="v", spool=spool)
        assert stream is not None and stream.sinks[0].topic == "fleet/cam-1/results"  # type: ignore[attr-defined]
        custom = build_stream(ResultsConfig.model_validate(
            {"iot": True, "iotTopic": "apps/{thing}/predictions"}), topics=topics, model="m",
            metadata=None, outputs=SPECS, source=object(), version="v", spool=spool)
        assert custom is not None and custom.sinks[0].topic == "apps/cam-1/predictions"  # type: ignore[attr-defined]
        local = build({}, connection=FakeConnection())
        assert local == ["local"]


def test_topics_resolve_the_thing_name_and_bad_settings_are_named() -> None:
    assert resolve_topic("edge/{iot:thingName}/results", "cam-1") == "edge/cam-1/results"
    assert resolve_topic("ml/{thing}/dlr", "cam-1") == "ml/cam-1/dlr"
    assert load_config({"thingName": "cam-1"}).results.local_topic == \
        "edge/{iot:thingName}/results"
    for bad in ({"localTopic": "edge/+/results"}, {"localTopic": "edge/#"},
                {"iotTopic": "$aws/things/x"}, {"localTopic": "edge/{thingName}/r"},
                {"localTopic": ""}, {"shmRing": "a/b"}, {"shmSlots": 1},
                {"rawOutputsMaxBytes": 20000}, {"spoolMaxBytes": 0}, {"handoffSlots": 1},
                {"topK": 0}, {"sometimes": True}):
        with pytest.raises(ValidationError) as caught:
            ResultsConfig.model_validate(bad)
        assert caught.value.errors()[0]["loc"][0] == next(iter(bad)), bad
    with pytest.raises(Exception, match=r"results\.policy\.everyN"):
        load_config({"thingName": "cam-1", "results": {"policy": {"everyN": 0}}})
