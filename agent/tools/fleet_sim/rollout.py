"""The controller at fleet scale, in one run (``edge-agent fleet simulate``).

A simulated fleet (protocol-level devices over a few MQTT connections) reports
to a real controller through a real broker; the controller runs a canary
rollout whose candidate breaks the latency guardrail on the canary cohort, and
rolls it back fleet-wide. Printed: how many reports were sent and ingested, the
controller's CPU per 1,000 reports (its own threads' CPU time, measured with
``time.thread_time`` around ingestion and evaluation), and the time from the
newest report the breaching verdict saw to the last rollback acknowledgement.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.controller.controller import TERMINAL, FleetController
from agent.controller.spec import parse_spec
from agent.controller.state import ControllerState
from agent.tools.bench.report import emit
from agent.tools.fleet_sim.simulate import (
    BreachSpec,
    BrokerAddress,
    ModelBehaviour,
    SimulatedFleet,
    fresh_keys,
    open_broker,
)
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig

CANDIDATE = "digits-v2"


@dataclass(frozen=True, kw_only=True)
class ScenarioOptions:
    """The canary-with-a-breach scenario: the fleet, its broker and the controller's pace."""

    broker: BrokerAddress | None = None  # None: a local broker for the run
    devices: int = 1000
    groups: Mapping[str, float] | tuple[str, ...] = field(
        default_factory=lambda: {"canary": 0.05, "fleet": 0.95})
    report_interval_s: float = 10.0
    eval_interval_s: float = 10.0  # seconds between guardrail evaluations
    bake_s: float = 30.0
    connections: int = 4
    timeout_s: float = 300.0
    seed: int = 0


def run_scenario(options: ScenarioOptions) -> dict[str, Any]:
    signer, trust = fresh_keys("fleet-controller")
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp, \
            open_broker(options.broker) as (host, port), \
            ControllerState(path=Path(tmp) / "c.db") as state:
        controller = FleetController(
            transport=MqttTransport(config=MqttConfig(host=host, port=port,
                                                      client_id="fleet-controller")),
            signer=signer, state=state)
        controller.start()  # before the devices: it hears every registration
        groups = options.groups
        fleet = SimulatedFleet(
            broker_host=host, broker_port=port, devices=options.devices,
            groups=groups, trust=trust, report_interval_s=options.report_interval_s,
            heartbeat_interval_s=None, connections=options.connections, seed=options.seed,
            start_spread_s=min(options.report_interval_s, 5.0),
            green={CANDIDATE: ModelBehaviour(median_ms=2.0)},
            breach=BreachSpec(label=CANDIDATE, cohort="canary"))
        started = time.monotonic()
        fleet.start()
        try:
            deadline = started + options.timeout_s
            while len(controller.registry.devices()) < options.devices:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every device registered")
                time.sleep(0.2)
            # Blue's latency before the switch is the canary's baseline: let every device
            # report a few times first.
            time.sleep(2.5 * options.report_interval_s)
            spec = parse_spec({
                "name": "sim-canary", "model": CANDIDATE, "groups": list(groups),
                "packages": {t: {"url": f"https://models.example/{CANDIDATE}.tar.gz",
                                 "sha256": "0" * 64, "version": 2}
                             for t in ("rasp4b", "jetson_nano", "linux_x86_64")},
                "strategy": {"type": "canary", "group": "canary", "bake_s": options.bake_s},
                "guardrails": {"min_samples": 100, "min_devices": 2, "max_p99_ratio": 3.0},
                "timing": {"step_timeout_s": options.timeout_s}})
            rollout_id = controller.start_rollout(spec)
            tick_cpu = 0.0
            status = "running"
            while status not in (*TERMINAL, "paused") and time.monotonic() < deadline:
                time.sleep(options.eval_interval_s)
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
            "devices": options.devices,
            "status": status,
            "reports_sent": sent,
            "reports_ingested": ingested,
            "reports_per_s_ingested": round(ingested / elapsed, 1),
            "controller_cpu_s_per_1k_reports": round(
                (controller.ingest_cpu_s + tick_cpu) / max(ingested, 1) * 1000, 4),
            "breach_to_rollback_s": round(last_ack - breach_seen, 3)
            if breach_seen and last_ack else None,
            "rolled_back_devices": len(rollbacks),
            "report_interval_s": options.report_interval_s,
            "eval_interval_s": options.eval_interval_s,
            "seconds": round(elapsed, 1),
        }


def simulate_rollout_main(options: ScenarioOptions, *, as_json: bool = False) -> int:
    """Run the scenario and print its figures; 0 when every device's report was ingested
    and the breach was rolled back."""
    result = run_scenario(options)
    emit(result, as_json=as_json)
    return 0 if result["status"] == "rolled_back" and \
        result["reports_ingested"] == result["reports_sent"] else 1

