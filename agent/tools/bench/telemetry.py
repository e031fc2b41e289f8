"""``edge-agent bench telemetry``: what reporting costs inference, and how fast the spool drains.

``metrics_overhead``: inference throughput of the loop while the agent's full
reporting path runs at a 1 s interval (metrics built from the live histogram,
health read, stamped, encoded, spooled durably, drained to a real broker at
QoS 1), divided by the same loop's throughput with no reporting; interleaved
rounds in one run, median of the per-round ratios.

``spool_msgs_per_s``: messages written to the spool and confirmed by the broker
(PUBACK) per second, with the drain rate limit lifted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, load_backend
from agent.device.telemetry.health import HealthProbe
from agent.device.telemetry.metrics import MetricsReporter, VariantSource
from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.tools.bench.report import emit
from agent.tools.bench.telemetry_path import spool_throughput
from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.wire.messages import Metrics
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.sequence import SequenceCounter
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics


def _loop(models: Path) -> InferenceLoop:
    res = resolve_model(models / "digits-v1", backend="dlr", profile=detect_profile())
    assert res.testset is not None
    x, y = load_testset(res.testset)
    return InferenceLoop(backend=load_backend(res.load_dir, DlrConfig()),
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=y))


def metrics_overhead(models: Path, broker: Any, workdir: Path, *, rounds: int,
                     seconds: float, interval_s: float = 1.0) -> tuple[float, int]:
    """Median per-round ratio (with reporting / without); also the reports sent."""
    loop = _loop(models)
    spool = Spool(path=workdir / "spool.db")
    transport = MqttTransport(config=MqttConfig(host=broker.host, port=broker.port,
                                                client_id="bench-telemetry"))
    transport.connect(10.0)
    drainer = SpoolDrainer(spool=spool, transport=transport)
    drainer.start()
    outbox = Outbox(stamper=Stamper(thing="bench-1",
                                    counter=SequenceCounter(path=workdir / "sequence")),
                    topics=Topics(thing="bench-1"), spool=spool)
    reporter, health = MetricsReporter(), HealthProbe(disk_path=workdir)
    reports = 0

    def report_every(stop: threading.Event) -> None:
        nonlocal reports
        while not stop.wait(interval_s):
            variants = reporter.report([VariantSource(variant="blue",
                                                      model_version="digits-v1",
                                                      stats=loop.stats)])
            outbox.send(Metrics, boot_id=outbox.stamper.boot_id, variants=variants,
                        health=health.read().to_report())
            reports += 1

    def throughput(with_reports: bool) -> float:
        stop = threading.Event()
        reporter_thread = threading.Thread(target=report_every, args=(stop,), daemon=True)
        if with_reports:
            reporter_thread.start()
        before = loop.stats.inferences
        started = time.perf_counter()
        loop.run(duration_s=seconds)
        elapsed = time.perf_counter() - started
        stop.set()
        if with_reports:
            reporter_thread.join()
        return (loop.stats.inferences - before) / elapsed

    ratios = []
    try:
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            results = {flag: throughput(flag) for flag in order}
            ratios.append(results[True] / results[False])
        drainer.flush(10)
    finally:
        drainer.stop()
        transport.close()
        spool.close()
        loop.close()
    return statistics.median(ratios), reports


def run_bench(models: Path, *, rounds: int, seconds: float,
              spool_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        work = Path(tmp)
        if find_mosquitto() is not None:
            broker: Any = MosquittoBroker(workdir=work / "mosquitto")
            name = "mosquitto"
        else:
            broker = EmbeddedBroker()
            name = "embedded (amqtt)"
        broker.start()
        try:
            overhead, reports = metrics_overhead(models, broker, work, rounds=rounds,
                                                 seconds=seconds)
            spool_rate = spool_throughput(broker, spool_seconds, workdir=work)
        finally:
            broker.stop()
    return {"metrics_overhead": round(overhead, 4), "spool_msgs_per_s": round(spool_rate),
            "reports_sent": reports, "rounds": rounds, "seconds_per_loop": seconds,
            "broker": name}


def bench_telemetry_main(args: argparse.Namespace) -> int:
    result = run_bench(args.models, rounds=args.rounds, seconds=args.seconds,
                       spool_seconds=args.spool_seconds)
    emit(result, as_json=args.json)
    return 0
