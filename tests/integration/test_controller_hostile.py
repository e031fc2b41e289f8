"""A real fleet controller (MQTT transport, real mosquitto) against hostile device-side
publishers: a forger publishing on its own topic in a real agent's name is refused and
counted, and the agent's own reports go on counting; one device flooding its topic at
2,000 valid reports a second is rate limited while every report of the other devices is
ingested, with the controller's memory bounded."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from agent_process import AgentProcess
from controller_rig import OTHER_BOOT, profile, variant

from agent.controller.controller import FleetController
from agent.controller.ingest_limits import IngestLimits
from agent.controller.state import ControllerState
from agent.tools.bench.flood_ingest import FLOODER, flood_payloads
from agent.tools.bench.flood_sender import FloodSender
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.codec import encode
from agent.wire.keys import generate_keypair
from agent.wire.messages import Metrics, Register, UpMessage
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import Signer
from agent.wire.topics import Topics

LIMITS = IngestLimits()  # the defaults, as `edge-agent fleet` runs them


def _client(broker: MosquittoBroker, name: str) -> MqttTransport:
    transport = MqttTransport(config=MqttConfig(
        host="127.0.0.1", port=broker.port, client_id=f"{name}-{uuid.uuid4().hex[:8]}",
        clean_session=True))
    transport.connect(10.0)
    return transport


def _wait(what: str, predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Controlled:
    controller: FleetController
    ingested: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, thing: str) -> int:
        with self.lock:
            return self.ingested[thing]


@pytest.fixture
def controlled(shared_broker: MosquittoBroker, tmp_path: Path) -> Iterator[Controlled]:
    signer = Signer(private_key=generate_keypair("ctl").private_key(), key_id="ctl")
    with ControllerState(path=tmp_path / "controller.db") as state:
        holder: list[Controlled] = []

        def on_ingest(message: UpMessage) -> None:
            with holder[0].lock:
                holder[0].ingested[message.thing] += 1

        controller = FleetController(
            transport=MqttTransport(config=MqttConfig(
                host="127.0.0.1", port=shared_broker.port,
                client_id=f"hostile-ctl-{uuid.uuid4().hex[:8]}", clean_session=True)),
            signer=signer, state=state, limits=LIMITS, on_ingest=on_ingest)
        holder.append(Controlled(controller))
        controller.start()
        _wait("the controller to connect", controller.transport.is_connected, 15)
        time.sleep(0.3)  # its subscription is in place
        try:
            yield holder[0]
        finally:
            controller.transport.close()


def test_a_forger_cannot_report_in_a_real_agent_s_name(
        controlled: Controlled, shared_broker: MosquittoBroker, built_models: Path,
        tmp_path: Path) -> None:
    thing = f"hostile-real-{uuid.uuid4().hex[:6]}"
    forger_thing = f"hostile-forger-{uuid.uuid4().hex[:6]}"
    agent = AgentProcess(thing=thing, model=built_models / "digits-v1",
                         state_dir=tmp_path / "agent", broker_port=shared_broker.port,
                         log_path=tmp_path / "agent.log", metrics_interval=0.5,
                         heartbeat_interval=1.0, rate=50).start()
    c = controlled.controller
    forger = _client(shared_broker, "forger")
    try:
        _wait("the agent to register", lambda: c.registry.get(thing) is not None, 60)
        real_class = c.registry.get(thing).hardware_class  # type: ignore[union-attr]
        mismatched = c.rejected["thing_mismatch"]
        # On its own topic, the forger claims the agent's name with a huge seq (which, if
        # taken, would make every later real report stale), fake figures and another class.
        own = Topics(thing=forger_thing)
        huge_seq = 2**62
        forged = [
            (own.up("metrics"), Metrics(thing=thing, seq=huge_seq, sent_at=0,
                                        boot_id=OTHER_BOOT,
                                        variants={"blue": variant(10**9)})),
            (own.up("register"), Register(thing=thing, seq=huge_seq + 1, sent_at=0,
                                          groups=["evil"], profile=profile("jetson_nano"),
                                          agent_version="6.6.6", boot_id=OTHER_BOOT,
                                          models={"blue": "evil"})),
        ]
        for topic, message in forged:
            forger.publish(topic, encode(message), qos=1).result(10)
        _wait("the forgeries to be refused",
              lambda: c.rejected["thing_mismatch"] >= mismatched + 2, 15)
        reports_before = controlled.count(thing)
        _wait("the agent's next reports", lambda: controlled.count(thing) >= reports_before + 2,
              30)
        device = c.registry.get(thing)
        assert device is not None and device.hardware_class == real_class
        assert "evil" not in device.groups and device.boot_id != OTHER_BOOT
        state = c.tracker.state(thing)
        assert state is not None and state.seq < huge_seq
        assert controlled.count(forger_thing) == 0 and c.registry.get(forger_thing) is None
    finally:
        forger.close()
        agent.stop()


def test_one_device_flooding_starves_no_other(controlled: Controlled,
                                               shared_broker: MosquittoBroker) -> None:
    c = controlled.controller
    me = psutil.Process()
    rss_before = me.memory_info().rss
    things = [f"hostile-legit-{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(10)]
    devices = _client(shared_broker, "legit")
    flood_s, rate = 3.0, 2000.0
    flood = FloodSender(host="127.0.0.1", port=shared_broker.port,
                        topic=Topics(thing=FLOODER).up("metrics"),
                        payloads=flood_payloads(int(rate * flood_s * 1.3)), rate=rate)
    sent: list[Future[None]] = []
    limited = c.rejected["rate_limited"]
    try:
        flood.start()
        started = time.monotonic()
        seq = 0
        while time.monotonic() - started < flood_s:
            seq += 1
            for thing in things:
                report = Metrics(thing=thing, seq=seq, sent_at=0, boot_id=OTHER_BOOT,
                                 variants={"blue": variant(10 * seq)})
                sent.append(devices.publish(Topics(thing=thing).up("metrics"), encode(report)))
            time.sleep(0.25)
        flood.stop()
        elapsed = time.monotonic() - started
        for future in sent:
            future.result(10)
        _wait("every legitimate report to be ingested",
              lambda: sum(controlled.count(t) for t in things) == len(sent), 20)
    finally:
        flood.stop()
        devices.close()
    assert all(controlled.count(t) == seq for t in things)
    flooded = controlled.count(FLOODER)
    # The flooder gets its burst and its rate, no more; the rest is refused before decoding.
    assert flooded <= LIMITS.report_burst + LIMITS.report_rate_per_s * (elapsed + 1)
    assert flood.sent > 4000 and c.rejected["rate_limited"] - limited >= flood.sent - flooded - 200
    assert me.memory_info().rss - rss_before < 100 * 2**20, "memory stays bounded"
