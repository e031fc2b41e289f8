"""``edge-agent fleet simulate``: the controller at fleet scale, in one run.

A simulated fleet (protocol-level devices over a few MQTT connections) reports
to a real controller through a real broker; the controller runs a canary
rollout whose candidate breaks the latency guardrail on the canary cohort, and
rolls it back fleet-wide. Printed: how many reports were sent and ingested, the
controller's CPU per 1,000 reports (its own threads' CPU time, measured with
``time.thread_time`` around ingestion and evaluation), and the time from the
newest report the breaching verdict saw to the last rollback acknowledgement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.controller.controller import TERMINAL, FleetController
from agent.controller.spec import parse_spec
from agent.controller.state import ControllerState
from agent.tools.bench.report import emit
from agent.tools.fleet_sim.simulate import (
    BreachSpec,
    ModelBehaviour,
    SimulatedFleet,
    _broker,
    _groups,
    add_broker_arguments,
    fresh_keys,
)
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig

CANDIDATE = "digits-v2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--groups", default="canary=0.05,fleet=0.95")
    parser.add_argument("--report-interval", type=float, default=10.0)
    parser.add_argument("--eval-interval", type=float, default=10.0,
                        help="seconds between guardrail evaluations")
    parser.add_argument("--bake", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")


def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    signer, trust = fresh_keys("fleet-controller")
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp, \
            _broker(args) as (host, port), ControllerState(path=Path(tmp) / "c.db") as state:
        controller = FleetController(
            transport=MqttTransport(config=MqttConfig(host=host, port=port,
                                                      client_id="fleet-controller")),
            signer=signer, state=state)
        controller.start()  # before the devices: it hears every registration
        groups = _groups(args.groups)
        fleet = SimulatedFleet(
            broker_host=host, broker_port=port, devices=args.devices,
            groups=groups, trust=trust, report_interval_s=args.report_interval,
            heartbeat_interval_s=None, connections=args.connections, seed=args.seed,
            start_spread_s=min(args.report_interval, 5.0),
            green={CANDIDATE: ModelBehaviour(median_ms=2.0)},
            breach=BreachSpec(label=CANDIDATE, cohort="canary"))
        started = time.monotonic()
        fleet.start()
        try:
            deadline = started + args.timeout
            while len(controller.registry.devices()) < args.devices:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every device registered")
                time.sleep(0.2)
            # Blue's latency before the switch is the canary's baseline: let every device
            # report a few times first.
            time.sleep(2.5 * args.report_interval)
            spec = parse_spec({
                "name": "sim-canary", "model": CANDIDATE, "groups": list(groups),
                "packages": {t: {"url": f"https://models.example/{CANDIDATE}.tar.gz",
                                 "sha256": "0" * 64, "version": 2}
                             for t in ("rasp4b", "jetson_nano", "linux_x86_64")},
                "strategy": {"type": "canary", "group": "canary", "bake_s": args.bake},
                "guardrails": {"min_samples": 100, "min_devices": 2, "max_p99_ratio": 3.0},
                "timing": {"step_timeout_s": args.timeout}})
            rollout_id = controller.start_rollout(spec)
            tick_cpu = 0.0
            status = "running"
            while status not in (*TERMINAL, "paused") and time.monotonic() < deadline:
                time.sleep(args.eval_interval)
                began = time.thread_time()
                controller.tick()
                tick_cpu += time.thread_time() - began
                record = state.rollout(rollout_id)
                status = record.status if record else "missing"
            run = controller.finished.get(rollout_id)
            rollbacks = state.assignments(rollout_id, action="rollback")
            while any(a.outcome is None for a in rollbacks) and time.monotonic() < deadline:
                time.sleep(0.1)
                rollbacks = state.assignments(rollout_id, action="rollback")
            last_ack = max((a.acked_at or 0.0 for a in rollbacks), default=0.0)
        finally:
            fleet.stop()
        sent = fleet.stats().reports_sent
        settle = time.monotonic() + 10
        while controller.metrics_ingested < sent and time.monotonic() < settle:
            time.sleep(0.1)
        controller.transport.close()
        elapsed = time.monotonic() - started
        breach_seen = run.breach_seen_at if run is not None else None
        ingested = controller.metrics_ingested
        return {
            "devices": args.devices,
            "status": status,
            "reports_sent": sent,
            "reports_ingested": ingested,
            "reports_per_s_ingested": round(ingested / elapsed, 1),
            "controller_cpu_s_per_1k_reports": round(
                (controller.ingest_cpu_s + tick_cpu) / max(ingested, 1) * 1000, 4),
            "breach_to_rollback_s": round(last_ack - breach_seen, 3)
            if breach_seen and last_ack else None,
            "rolled_back_devices": len(rollbacks),
            "report_interval_s": args.report_interval,
            "eval_interval_s": args.eval_interval,
            "seconds": round(elapsed, 1),
        }


def simulate_rollout_main(args: argparse.Namespace) -> int:
    result = run_scenario(args)
    emit(result, as_json=args.json)
    return 0 if result["status"] == "rolled_back" and \
        result["reports_ingested"] == result["reports_sent"] else 1

