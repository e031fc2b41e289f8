"""A protocol-level emulated fleet: thousands of devices in one process, for testing the
fleet controller at sizes no laptop runs as real agents.

Each simulated device registers, heartbeats, reports per-variant metrics on the real
histogram edges, verifies commands through :class:`~agent.wire.gate.CommandGate`
with its own :class:`~agent.wire.replay.ReplayGuard`, and answers them as the real
agent does (ack, state, ``rejected_message`` events). What it does not do: run models,
fetch packages (``stage`` loads the label in ``StageArgs.version``), keep a spool
while offline, or roll back on local guardrails (the controller is what is tested).

    edge-agent fleet devices --devices 10000 (--broker mqtt://HOST:PORT | --embedded)
        [--groups canary=0.05,fleet=0.95] [--seconds 60] [--json]

runs :func:`simulate_main` with those options as a :class:`SimulateOptions`.

Plugging a controller in: call :func:`simulate_main` (or :func:`run_simulation`) with
``hook``; it is called once the fleet runs, with a :class:`SimulationRun` (the fleet, the
broker, a signer the fleet trusts, the deadline), must return by the deadline, and its
returned fields (``reports_ingested``, ``controller_cpu_s_per_1k_reports``,
``breach_to_rollback_s`` from ``run.fleet.breach_report()``...) are merged into the result.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.tools.fleet_sim.fleet import DEFAULT_PROFILES, SimulatedFleet
from agent.tools.fleet_sim.model import (
    BreachReport,
    BreachSpec,
    DeviceView,
    FleetStats,
    ModelBehaviour,
    SimulationError,
    assign_groups,
)
from agent.wire.keys import generate_keypair
from agent.wire.signing import Signer, TrustStore

__all__ = [
    "BreachReport", "BreachSpec", "DeviceView", "FleetHook", "FleetStats", "ModelBehaviour",
    "SimulateOptions", "SimulatedFleet", "SimulationError", "SimulationRun", "assign_groups",
    "fresh_keys", "open_broker", "run_simulation", "simulate_main",
]

BrokerAddress = tuple[str, int]  # host, port of a plain-TCP broker


@dataclass(frozen=True, kw_only=True)
class SimulateOptions:
    """One run of a simulated fleet: where its broker is, the fleet, and for how long."""

    broker: BrokerAddress | None = None  # None: a local broker for the run (open_broker)
    devices: int = 1000
    groups: Mapping[str, float] | tuple[str, ...] = field(
        default_factory=lambda: {"canary": 0.05, "fleet": 0.95})  # see assign_groups
    profiles: tuple[str, ...] = DEFAULT_PROFILES  # Neo targets the devices cycle through
    report_interval_s: float = 10.0
    heartbeat_interval_s: float | None = 30.0  # None: no heartbeats
    connections: int = 4
    seconds: float = 30.0
    seed: int = 0
    inference_rate_hz: float = 20.0  # simulated inferences/s per device
    blue_version: str = "digits-v1"
    green: Mapping[str, ModelBehaviour] = field(default_factory=dict)  # candidates by label
    breach: BreachSpec | None = None
    trust: TrustStore | None = None  # None: a fresh key, its signer in SimulationRun


@dataclass(frozen=True, kw_only=True)
class SimulationRun:
    """What a controller hook gets: the running fleet and how to reach and command it."""

    fleet: SimulatedFleet
    options: SimulateOptions
    broker_host: str
    broker_port: int
    signer: Signer | None  # a key the fleet trusts (None when options.trust was given)
    deadline: float  # time.monotonic() at which the run ends

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self) -> None:
        time.sleep(self.remaining_s())


FleetHook = Callable[[SimulationRun], Mapping[str, Any]]


def fresh_keys(key_id: str) -> tuple[Signer, TrustStore]:
    """A new controller key, and a trust store holding only it."""
    pair = generate_keypair(key_id)
    return (Signer(private_key=pair.private_key(), key_id=pair.key_id),
            TrustStore(keys={pair.key_id: pair.public_key()}))


@contextmanager
def open_broker(address: BrokerAddress | None) -> Iterator[BrokerAddress]:
    """``address`` as given; otherwise a local broker for the run (mosquitto if installed,
    else the embedded one), stopped on the way out."""
    if address is not None:
        yield address
        return
    from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto

    if find_mosquitto() is not None:
        with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
            mosquitto = MosquittoBroker(workdir=Path(tmp), persistence=False)
            mosquitto.start()
            try:
                yield mosquitto.host, mosquitto.port
            finally:
                mosquitto.stop()
        return
    from agent.tools.brokers.embedded import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield embedded.host, embedded.port


def run_simulation(options: SimulateOptions, *,
                   hook: FleetHook | None = None) -> dict[str, Any]:
    """Run the fleet for ``options.seconds`` (or while ``hook`` runs); its figures."""
    signer: Signer | None = None
    if options.trust is not None:
        trust = options.trust
    else:
        signer, trust = fresh_keys("fleet-sim")
    with open_broker(options.broker) as (host, port):
        fleet = SimulatedFleet(
            broker_host=host, broker_port=port, devices=options.devices,
            groups=options.groups, trust=trust, profiles=options.profiles,
            report_interval_s=options.report_interval_s,
            heartbeat_interval_s=options.heartbeat_interval_s,
            connections=options.connections, blue_version=options.blue_version,
            green=options.green, breach=options.breach,
            inference_rate_hz=options.inference_rate_hz, seed=options.seed)
        fleet.start()
        started = time.monotonic()
        run = SimulationRun(fleet=fleet, options=options, broker_host=host, broker_port=port,
                            signer=signer, deadline=started + options.seconds)
        # Rates are taken once every device has reported once (the steady state).
        steady_at = started + fleet.start_spread_s + fleet.report_interval_s
        snapshot: list[tuple[FleetStats, float]] = []
        timer = threading.Timer(max(0.0, min(steady_at, run.deadline) - time.monotonic()),
                                lambda: snapshot.append((fleet.stats(), time.monotonic())))
        timer.start()
        try:
            extra: Mapping[str, Any] = hook(run) if hook is not None else {}
            if hook is None:
                run.wait()
            timer.join()
            stats = fleet.stats()
            ended = time.monotonic()
        finally:
            timer.cancel()
            fleet.stop()
    first, first_at = snapshot[0] if snapshot else (None, started)
    span = ended - first_at
    base_reports = first.reports_sent if first is not None else 0
    base_messages = first.messages_sent if first is not None else 0
    return {
        "devices": options.devices, "connections": options.connections,
        "report_interval_s": options.report_interval_s, "seconds": round(ended - started, 3),
        "reports_sent": stats.reports_sent,
        "reports_per_s_sent": round((stats.reports_sent - base_reports) / span, 1)
        if span > 0 else 0.0,
        "messages_per_s_sent": round((stats.messages_sent - base_messages) / span, 1)
        if span > 0 else 0.0,
        "rate_window_s": round(span, 3),
        **{k: v for k, v in asdict(stats).items() if k not in ("devices", "reports_sent")},
        **extra,
    }


def simulate_main(options: SimulateOptions, *, hook: FleetHook | None = None,
                  as_json: bool = False) -> int:
    """Run the fleet and print its figures (one JSON line with ``as_json``)."""
    result = run_simulation(options, hook=hook)
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
