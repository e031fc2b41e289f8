"""Putting a result stream together from the agent's ``results`` settings: its
destinations, the shared-memory ring's :class:`ShmSink`, and :func:`build_stream`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.core.errors import AgentError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.device.results.config import ResultsConfig, resolve_topic
from agent.device.results.iot import IotSink
from agent.device.results.local_pubsub import LocalPubSubSink
from agent.device.results.shm_ring import ResultRingWriter
from agent.device.results.stream import ResultStream, Sink
from agent.device.uplink.ipc import IpcConnection
from agent.device.uplink.spool import Spool
from agent.wire.topics import Topics

log = logging.getLogger("edge_agent.results")


class ShmSink(Sink):
    """Writes each result's outputs into the shared-memory result ring."""

    destination = "shm"

    def __init__(self, writer: ResultRingWriter) -> None:
        super().__init__()
        self.writer = writer

    def publish(self, result: dict[str, Any], payload: bytes,
                outputs: Sequence[np.ndarray]) -> None:
        best = result["top_k"][0] if result["top_k"] else None
        frame = result["frame"]
        try:
            self.writer.write(result["seq"], outputs, frame_id=frame["id"],
                              frame_time=frame["time"], variant=result["variant"],
                              version=result["version"],
                              top1=None if best is None else best["index"],
                              score=None if best is None else best["score"],
                              request=result["source"] == "api")
        except (ValueError, TypeError) as err:  # outputs that no longer fit the ring
            self.fail(f"ring {self.writer.name}: {err}")

    def close(self) -> None:
        try:
            self.writer.close()
        except BufferError:  # a view on the ring is still held: the name is removed anyway
            log.debug("result ring %s closed with views still held", self.writer.name)


def build_stream(config: ResultsConfig, *, topics: Topics, model: str,
                 metadata: ModelMetadata | None, outputs: Sequence[TensorSpec],
                 source: object, version: str, spool: Spool | None = None,
                 connection: IpcConnection | None = None) -> ResultStream | None:
    """The stream the settings describe, with its destinations (not started); None when
    it would publish nowhere. Local pub/sub needs ``connection`` (the agent's IPC
    connection: only under a nucleus); IoT Core needs ``spool``. A shared-memory ring
    that cannot be created is an :class:`~agent.core.errors.ResultRingError`."""
    if not config.enabled:
        return None
    sinks: list[Sink] = []
    if config.shm_ring is not None:
        writer = ResultRingWriter(config.shm_ring, outputs, slots=config.shm_slots)
        log.info("results ring %s: %d slots in /dev/shm/%s", writer.name, config.shm_slots,
                 writer.name)
        sinks.append(ShmSink(writer))
    if config.iot and spool is not None:
        topic = topics.results if config.iot_topic is None \
            else resolve_topic(config.iot_topic, topics.thing)
        sinks.append(IotSink(spool, topic))
    if config.local and connection is not None:
        sinks.append(LocalPubSubSink(connection, resolve_topic(config.local_topic,
                                                               topics.thing)))
    if not sinks:
        return None
    try:
        return ResultStream(config=config, thing=topics.thing, model=model,
                            metadata=metadata, outputs=outputs, source=source,
                            version=version, sinks=sinks)
    except AgentError:
        for sink in sinks:
            sink.close()
        raise
