"""What one device flooding its own topics costs the fleet controller's ingest of every
other device's reports.

:func:`measure_ingest` runs a real :class:`~agent.controller.controller.FleetController`
on the transport ``edge-agent fleet`` uses (:class:`~agent.wire.mqtt.MqttTransport`) and a
real broker (mosquitto when installed, else the embedded amqtt). ``legit_devices``
emulated devices (one MQTT connection, each device on its own topics and sequence) send a
metrics report a second each, spread over the second, at QoS 1; one device floods its own
metrics topic with ``flood_rate`` valid, fresh metrics reports a second at QoS 0 over a
raw connection (:class:`~agent.tools.bench.flood_sender.FloodSender`), the worst a
compromised device can do within the protocol. After ``seconds`` the flood stops and the
controller gets a few seconds to take in what is still queued. The controller runs its
default :class:`~agent.controller.ingest_limits.IngestLimits`.

The figures: ``legit_sent`` (reports the broker acknowledged), ``legit_ingested`` (of
those, what the controller ingested: goal, all of them), ``flood_sent`` (written by the
flooder), ``flood_rejected`` (refused as ``rate_limited``), ``flood_ingested`` (the
device's burst and rate), ``flood_rate_per_s`` (as achieved), ``ingest_cpu_s`` (CPU the
controller's ingest spent) and ``seconds``.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.controller.controller import FleetController
from agent.controller.state import ControllerState
from agent.core.histogram import BUCKET_EDGES_US, BUCKETS_VERSION
from agent.tools.bench.flood_sender import FloodSender
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.wire.codec import encode
from agent.wire.keys import generate_keypair
from agent.wire.messages import Buckets, Metrics, UpMessage, VariantMetrics
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import Signer
from agent.wire.topics import Topics
from agent.wire.transport import TransportError

FLOODER = "bench-flooder"
_BOOT = "b" * 32
_SETTLE_S = 10.0  # at most, for the controller to take in what is queued after the flood
_SEQ_MARK = 987_654_321_012  # replaced in the flood's encoded template


def _metrics(thing: str, seq: int, total: int) -> Metrics:
    counts = [0] * (len(BUCKET_EDGES_US) + 1)
    counts[30] = total
    return Metrics(thing=thing, seq=seq, sent_at=int(time.time() * 1000), boot_id=_BOOT,
                   variants={"blue": VariantMetrics(
                       model_version="digits-v1", inferences_total=total, errors_total=0,
                       buckets=Buckets(version=BUCKETS_VERSION, counts=counts),
                       window_s=1.0, inferences=0, errors=0, throughput_per_s=0.0)})


def flood_payloads(count: int) -> list[bytes]:
    """``count`` valid metrics reports of the flooder, each with a fresh seq and id."""
    template = encode(_metrics(FLOODER, _SEQ_MARK, 1))
    seq = f'"seq":{_SEQ_MARK}'.encode()
    first_id = template.index(b'"id":"') + 6
    head, tail = template[:first_id], template[first_id + 32:]
    return [(head + uuid.uuid4().hex.encode() + tail).replace(seq, f'"seq":{i}'.encode())
            for i in range(1, count + 1)]


@contextmanager
def local_broker(work: Path) -> Iterator[tuple[Any, str]]:
    """A started local broker (mosquitto when installed, else the embedded amqtt) and its
    name, stopped on exit."""
    broker: Any = (MosquittoBroker(workdir=work) if find_mosquitto() else EmbeddedBroker())
    broker.start()
    try:
        yield broker, "mosquitto" if isinstance(broker, MosquittoBroker) else "embedded (amqtt)"
    finally:
        broker.stop()


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def measure_ingest(*, seconds: float = 3.0, legit_devices: int = 20,
                   flood_rate: float = 2000.0) -> dict[str, float | int]:
    """Legitimate reports sent and ingested while one device floods (see the module)."""
    if seconds <= 0 or legit_devices < 1 or flood_rate <= 0:
        raise ValueError("measure_ingest needs seconds > 0, legit_devices >= 1, flood_rate > 0")
    ingested: Counter[str] = Counter()
    lock = threading.Lock()

    def on_ingest(message: UpMessage) -> None:
        if isinstance(message, Metrics):
            with lock:
                ingested[message.thing] += 1

    things = [f"bench-legit-{i:03d}" for i in range(legit_devices)]
    signer = Signer(private_key=generate_keypair("bench-ctl").private_key(), key_id="bench-ctl")
    with tempfile.TemporaryDirectory(prefix="flood-ingest-") as tmp, \
            local_broker(Path(tmp) / "broker") as (broker, name), \
            ControllerState(path=Path(tmp) / "controller.db") as state:
        def client(client_id: str) -> MqttTransport:
            return MqttTransport(config=MqttConfig(host="127.0.0.1", port=broker.port,
                                                   client_id=client_id, clean_session=True))

        controller = FleetController(transport=client(f"bench-controller-{uuid.uuid4().hex[:8]}"),
                                     signer=signer, state=state, on_ingest=on_ingest)
        devices = client(f"bench-devices-{uuid.uuid4().hex[:8]}")
        flood: FloodSender | None = None
        flooding = False
        try:
            controller.start()
            devices.connect(10.0)
            if not _wait(lambda: controller.transport.is_connected()
                         and devices.is_connected(), 15.0):
                raise RuntimeError(f"flood ingest: could not connect to the {name} broker")
            time.sleep(0.3)  # the controller's subscription is in place
            flood = FloodSender(host="127.0.0.1", port=broker.port,
                                topic=Topics(thing=FLOODER).up("metrics"),
                                payloads=flood_payloads(int(flood_rate * seconds * 1.2) + 100),
                                rate=flood_rate).start()
            flooding = True
            sent: list[Future[None]] = []
            started = time.monotonic()
            period = 1.0 / legit_devices
            round_ = 0
            while time.monotonic() - started < seconds:
                round_ += 1
                for i, thing in enumerate(things):
                    due = started + (round_ - 1) + i * period
                    time.sleep(max(0.0, due - time.monotonic()))
                    if time.monotonic() - started >= seconds:
                        break
                    report = _metrics(thing, round_, 10 * round_)
                    sent.append(devices.publish(Topics(thing=thing).up("metrics"),
                                                encode(report), qos=1))
            flood.stop()
            flooding = False
            acked = 0
            for future in sent:
                try:
                    future.result(10.0)
                    acked += 1
                except (TransportError, TimeoutError):
                    pass  # a report the broker never took was not sent

            def legit() -> int:
                with lock:
                    return sum(ingested[t] for t in things)
            _wait(lambda: legit() >= acked, _SETTLE_S)
            with lock:
                flood_ingested = ingested[FLOODER]
            return {
                "legit_sent": acked,
                "legit_ingested": legit(),
                "flood_sent": flood.sent,
                "flood_rejected": controller.rejected["rate_limited"],
                "flood_ingested": flood_ingested,
                "flood_rate_per_s": round(flood.achieved_rate, 1),
                "ingest_cpu_s": round(controller.ingest_cpu_s, 3),
                "seconds": seconds,
            }
        finally:
            if flood is not None and flooding:
                flood.stop()
            devices.close()
            controller.transport.close()
