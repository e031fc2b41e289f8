"""Telemetry path throughput: spool put (durable) -> drainer -> MQTT QoS 1 -> PUBACK.

Used by ``edge-agent bench telemetry``. The figure is messages per second from the
first put until the broker confirmed the last one, with the drain rate limit lifted;
it depends on the disk's fsync latency (one per put) and the machine, so it is
printed, never asserted.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Protocol

from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.spool import Priority, Spool
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.transport import TransportError


class BrokerAddress(Protocol):
    """Anything with a host and port: MosquittoBroker, EmbeddedBroker."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def spool_throughput(broker: BrokerAddress, seconds: float, *, payload_bytes: int = 256,
                     max_in_flight: int = 64, workdir: Path | None = None) -> float:
    """Put messages for ``seconds`` into a fresh spool while a drainer (no rate limit)
    publishes them at QoS 1; messages/s confirmed, counted until the last PUBACK."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="spool-bench-") as tmp:
        spool = Spool(path=Path(tmp) / "spool.db", budget_bytes=1 << 40)
        transport = MqttTransport(config=MqttConfig(
            host=broker.host, port=broker.port, client_id=f"spool-bench-{os.getpid()}",
            clean_session=True))
        drainer = SpoolDrainer(spool=spool, transport=transport, rate_limit_per_s=0,
                               max_in_flight=max_in_flight)
        try:
            transport.connect(10.0)
            if not transport.is_connected():
                raise TransportError(f"no broker at {broker.host}:{broker.port}")
            drainer.start()
            payload = os.urandom(payload_bytes)
            started = time.perf_counter()
            stop_at = started + seconds
            produced = 0
            while time.perf_counter() < stop_at:
                spool.put("bench/spool/metrics", payload, priority=Priority.METRICS)
                produced += 1
            left = drainer.flush(max(30.0, 10 * seconds))
            elapsed = time.perf_counter() - started
            if left:
                raise TransportError(f"{left} of {produced} messages still unconfirmed")
            return produced / elapsed
        finally:
            drainer.stop()
            transport.close()
            spool.close()
