"""A real FleetController on an in-memory broker, with emulated devices that publish on
their own topics: for tests of what the controller takes in and what it decides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.controller.controller import FleetController
from agent.controller.ingest_limits import IngestLimits
from agent.controller.plan import command_seq
from agent.controller.spec import parse_spec
from agent.controller.state import ControllerState
from agent.core.histogram import BUCKET_EDGES_US, BUCKETS_VERSION
from agent.wire.codec import encode
from agent.wire.keys import generate_keypair
from agent.wire.memory import MemoryBroker, MemoryTransport
from agent.wire.messages import (
    Buckets,
    Event,
    EventKind,
    HealthReport,
    Metrics,
    ProfileInfo,
    Register,
    UpMessage,
    VariantMetrics,
)
from agent.wire.signing import Signer
from agent.wire.topics import Topics

BOOT = "0f6c2b7e4d5a4c1b9e8f7a6b5c4d3e2f"
OTHER_BOOT = "1e2d3c4b5a6978877665544332211000"
BUCKETS = len(BUCKET_EDGES_US) + 1
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CANDIDATE = "digits-v2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def profile(neo_target: str = "rasp4b") -> ProfileInfo:
    return ProfileInfo(board="Raspberry Pi 4", board_family="raspberry_pi",
                       neo_target=neo_target, arch="aarch64", reported_arch="aarch64",
                       emulated=False, os_bits=64, cpu_count=4, mem_total_bytes=4 * 2**30,
                       mem_available_bytes=3 * 2**30)


def counts(total: int, bucket: int = 30) -> list[int]:
    out = [0] * BUCKETS
    out[bucket] = total
    return out


def variant(total: int, *, model: str = CANDIDATE, rollout: str | None = None,
            rollout_seq: int | None = None, series: int = 0, errors: int = 0,
            bucket: int = 30) -> VariantMetrics:
    return VariantMetrics(model_version=model, rollout_id=rollout, rollout_seq=rollout_seq,
                          series=series, inferences_total=total, errors_total=errors,
                          buckets=Buckets(version=BUCKETS_VERSION,
                                          counts=counts(total, bucket)),
                          window_s=1.0, inferences=0, errors=0, throughput_per_s=0.0)


@dataclass
class Device:
    """One emulated device: its own topics and sequence."""

    rig: Rig
    thing: str
    seq: int = 0
    boot_id: str = BOOT

    def stamp(self) -> dict[str, Any]:
        self.seq += 1
        return {"thing": self.thing, "seq": self.seq, "sent_at": 0}

    def publish(self, message: UpMessage, *, topic_thing: str | None = None) -> None:
        topic = Topics(thing=topic_thing or self.thing).up(message.channel)
        self.rig.publish(topic, encode(message))

    def register(self, neo_target: str = "rasp4b", groups: tuple[str, ...] = ("g",), *,
                 topic_thing: str | None = None) -> None:
        self.publish(Register(**self.stamp(), groups=list(groups), profile=profile(neo_target),
                              agent_version="0.1.0", boot_id=self.boot_id,
                              models={"blue": "digits-v1"}), topic_thing=topic_thing)

    def metrics(self, total: int = 10, **kwargs: Any) -> Metrics:
        health = kwargs.pop("health", None)
        return Metrics(**self.stamp(), boot_id=self.boot_id,
                       variants={"green": variant(total, **kwargs)},
                       health=HealthReport(**health) if health else None)

    def step_metrics(self, total: int, *, rollout: str, step: int = 0,
                     **kwargs: Any) -> Metrics:
        """A report that counts for ``step`` of ``rollout`` (green is the candidate)."""
        return self.metrics(total, rollout=rollout, rollout_seq=command_seq(step, 1),
                            **kwargs)

    def breach(self, version: str = CANDIDATE,
               kind: EventKind = "guardrail_breach") -> Event:
        return Event(**self.stamp(), kind=kind, detail="p99 12000 us over 5000 us",
                     data={"rule": "p99", "version": version})


@dataclass
class Rig:
    controller: FleetController
    broker: MemoryBroker
    clock: Clock
    devices: dict[str, Device] = field(default_factory=dict)

    def publish(self, topic: str, payload: bytes) -> None:
        self.controller.on_message(topic, payload)

    def device(self, thing: str) -> Device:
        if thing not in self.devices:
            self.devices[thing] = Device(self, thing)
        return self.devices[thing]

    def fleet(self, n: int, neo_target: str = "rasp4b") -> list[Device]:
        out = [self.device(f"dev-{i:02d}") for i in range(n)]
        for device in out:
            device.register(neo_target)
        return out

    def start(self, name: str = "r-1", **overrides: Any) -> str:
        data: dict[str, Any] = {
            "name": name, "model": CANDIDATE,
            "packages": {t: {"url": "https://example.com/p.tar.gz", "sha256": SHA,
                             "version": 2} for t in ("rasp4b", "jetson_nano")},
            "groups": ["g"], "strategy": {"type": "all_at_once", "watch_s": 5},
            "guardrails": {"min_samples": 1}}
        data.update(overrides)
        return self.controller.start_rollout(parse_spec(data))

    def status(self, rollout_id: str = "r-1") -> tuple[str, str]:
        record = self.controller.state.rollout(rollout_id)
        assert record is not None
        return record.status, record.reason or ""

    def decisions(self, kind: str, rollout_id: str = "r-1") -> list[dict[str, Any]]:
        return [dict(d.detail) for d in self.controller.state.decisions(rollout_id)
                if d.kind == kind]

    def accounted(self) -> int:
        c = self.controller
        return c.ingested + c.ignored + sum(c.rejected.values())


@contextmanager
def controller_rig(tmp: Path, *, limits: IngestLimits | None = None) -> Iterator[Rig]:
    clock = Clock()
    broker = MemoryBroker()
    signer = Signer(private_key=generate_keypair("ctl").private_key(), key_id="ctl")
    with ControllerState(path=tmp / "controller.db") as state:
        controller = FleetController(transport=MemoryTransport(broker=broker,
                                                               client_id="controller"),
                                     signer=signer, state=state, clock=clock, limits=limits)
        controller.start()
        yield Rig(controller, broker, clock)
