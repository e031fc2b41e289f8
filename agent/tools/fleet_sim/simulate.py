"""A protocol-level emulated fleet: thousands of devices in one process, for testing the
fleet controller at sizes no laptop runs as real agents.

Each simulated device registers, heartbeats, reports per-variant metrics on the real
histogram edges, verifies commands through :class:`~agent.wire.gate.CommandGate`
with its own :class:`~agent.wire.replay.ReplayGuard`, and answers them as the real
agent does (ack, state, ``rejected_message`` events). What it does not do: run models,
fetch packages (``stage`` loads the label in ``StageArgs.version``), keep a spool
while offline, or roll back on local guardrails (the controller is what is tested).

    edge-agent fleet simulate --devices 10000 (--broker mqtt://HOST:PORT | --embedded)
        [--groups canary=0.05,fleet=0.95] [--seconds 60] [--json]

Plugging a controller in: call :func:`simulate_main` with ``hook``; it is called once
the fleet runs, with a :class:`SimulationRun` (the fleet, the broker, a signer the
fleet trusts, the deadline), must return by the deadline, and its returned fields
(``reports_ingested``, ``controller_cpu_s_per_1k_reports``, ``breach_to_rollback_s``
from ``run.fleet.breach_report()``...) are merged into the printed JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
    "SimulatedFleet", "SimulationError", "SimulationRun", "add_broker_arguments",
    "add_simulate_arguments", "assign_groups", "fresh_keys", "simulate_main",
]


@dataclass(frozen=True, kw_only=True)
class SimulationRun:
    """What a controller hook gets: the running fleet and how to reach and command it."""

    fleet: SimulatedFleet
    args: argparse.Namespace
    broker_host: str
    broker_port: int
    signer: Signer | None  # a key the fleet trusts (None when --trusted-key was given)
    deadline: float  # time.monotonic() at which the run ends

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self) -> None:
        time.sleep(self.remaining_s())


FleetHook = Callable[[SimulationRun], Mapping[str, Any]]


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker`` or ``--embedded``, for :func:`_broker`."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", help="mqtt://HOST:PORT (plain TCP)")
    where.add_argument("--embedded", action="store_true",
                       help="start a local broker (mosquitto if installed, else amqtt)")


def fresh_keys(key_id: str) -> tuple[Signer, TrustStore]:
    """A new controller key, and a trust store holding only it."""
    pair = generate_keypair(key_id)
    return (Signer(private_key=pair.private_key(), key_id=pair.key_id),
            TrustStore(keys={pair.key_id: pair.public_key()}))


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--groups", default="canary=0.05,fleet=0.95",
                        help="NAME=SHARE,... splits the fleet; NAME,NAME puts all in each")
    parser.add_argument("--profiles", default=",".join(DEFAULT_PROFILES),
                        help="Neo targets the devices cycle through")
    parser.add_argument("--report-interval", type=float, default=10.0)
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="0: none")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inference-rate", type=float, default=20.0,
                        help="simulated inferences/s per device")
    parser.add_argument("--blue-version", default="digits-v1")
    parser.add_argument("--green", action="append", default=[],
                        metavar="LABEL=MEDIAN_MS[:AGREEMENT[:ERROR_RATE]]",
                        help="how a candidate behaves (repeatable; unknown labels act as blue)")
    parser.add_argument("--breach", metavar="LABEL[@GROUP]",
                        help="inject a breach of LABEL on a cohort (default group: canary)")
    parser.add_argument("--trusted-key", action="append", default=[], metavar="ID=PATH",
                        help="controller public key (default: a fresh key for the hook)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")


def _groups(text: str) -> dict[str, float] | list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if all("=" not in item for item in items):
        return items
    try:
        return {name: float(share) for name, share in (item.split("=", 1) for item in items)}
    except ValueError as err:
        raise SimulationError(f"--groups wants NAME=SHARE,...: {text!r}") from err


def _green(items: list[str]) -> dict[str, ModelBehaviour]:
    out: dict[str, ModelBehaviour] = {}
    for item in items:
        label, _, spec = item.partition("=")
        parts = spec.split(":")
        try:
            out[label] = ModelBehaviour(
                median_ms=float(parts[0]),
                agreement=float(parts[1]) if len(parts) > 1 else 1.0,
                error_rate=float(parts[2]) if len(parts) > 2 else 0.0)
        except (ValueError, IndexError) as err:
            raise SimulationError(f"--green wants LABEL=MEDIAN_MS[:AGREEMENT[:ERRORS]], "
                                  f"got {item!r}") from err
    return out


@contextmanager
def _broker(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    if args.broker:
        url = urlparse(args.broker)
        if url.scheme != "mqtt" or not url.hostname:
            raise SimulationError(f"--broker wants mqtt://HOST:PORT, got {args.broker!r}")
        yield url.hostname, url.port or 1883
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


def simulate_main(args: argparse.Namespace, *, hook: FleetHook | None = None) -> int:
    signer: Signer | None = None
    if args.trusted_key:
        paths = {}
        for item in args.trusted_key:
            key_id, _, path = item.partition("=")
            paths[key_id] = Path(path)
        trust = TrustStore.from_files(paths)
    else:
        signer, trust = fresh_keys("fleet-sim")
    breach = None
    if args.breach:
        label, _, cohort = args.breach.partition("@")
        breach = BreachSpec(label=label, cohort=cohort or "canary")
    with _broker(args) as (host, port):
        fleet = SimulatedFleet(
            broker_host=host, broker_port=port, devices=args.devices,
            groups=_groups(args.groups), trust=trust,
            profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
            report_interval_s=args.report_interval,
            heartbeat_interval_s=args.heartbeat_interval or None,
            connections=args.connections, blue_version=args.blue_version,
            green=_green(args.green), breach=breach, inference_rate_hz=args.inference_rate,
            seed=args.seed)
        fleet.start()
        started = time.monotonic()
        run = SimulationRun(fleet=fleet, args=args, broker_host=host, broker_port=port,
                            signer=signer, deadline=started + args.seconds)
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
    result: dict[str, Any] = {
        "devices": args.devices, "connections": args.connections,
        "report_interval_s": args.report_interval, "seconds": round(ended - started, 3),
        "reports_sent": stats.reports_sent,
        "reports_per_s_sent": round((stats.reports_sent - base_reports) / span, 1)
        if span > 0 else 0.0,
        "messages_per_s_sent": round((stats.messages_sent - base_messages) / span, 1)
        if span > 0 else 0.0,
        "rate_window_s": round(span, 3),
        **{k: v for k, v in asdict(stats).items() if k not in ("devices", "reports_sent")},
        **extra,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
