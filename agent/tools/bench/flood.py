"""``edge-agent bench flood``: what a command-topic flood costs a device, and what a
device's report flood costs the controller.

Device side: a real ``edge-agent serve`` process, unpaced (``--rate 0``: the loop runs
as fast as the model allows), connected to a real broker (mosquitto when installed, else
the embedded amqtt). Its throughput is read from its own metrics reports (the cumulative
``inferences_total`` over the reports' own timestamps) in phases of ``seconds`` each,
interleaved: unloaded, then ``rounds`` times a flood of ``flood_rate`` hostile messages
a second on its command topic (:mod:`agent.tools.bench.flood_sender`) followed by
unloaded again. ``throughput_ratio`` is the median over the rounds of a flood phase's
throughput over the mean of the unloaded phases around it (goal: at least 0.9). During
the floods the controller's signed ``status`` command is sent again every quarter
second (from a quarter second into the first flood), as the controller does until acked
(``command_acked_s``: flood time until it was), and the agent's RSS is sampled
(``rss_growth_mib``: its peak over its RSS before). ``rejection_events`` and
``summary_events`` count the ``rejected_message`` events the floods caused in the
uplink, ``suppressed`` what the summaries counted instead of answering one by one (the
agent runs the default limits but for a summary interval of a second, so that summaries
come within the phases).

Controller side: :func:`agent.tools.bench.flood_ingest.measure_ingest` (``ingest_*``:
legitimate reports sent and ingested while one device floods; goal: all ingested).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from agent.tools.bench.flood_ingest import local_broker, measure_ingest
from agent.tools.bench.flood_sender import FloodSender, hostile_payloads
from agent.tools.bench.report import emit
from agent.wire.codec import decode, encode
from agent.wire.commands import StatusCommand, Target
from agent.wire.errors import ProtocolError
from agent.wire.fields import new_message_id
from agent.wire.keys import generate_keypair
from agent.wire.messages import Ack, Event, Metrics, UpMessage
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import Signer
from agent.wire.topics import Topics

THING = "bench-flood"
_RESEND_S = 0.25
_METRICS_S = 0.25
_SUMMARY_S = 1.0  # the device's default is 10 s: summaries seen within short phases


class _Uplink:
    """Everything the agent sends, decoded, with the time it arrived."""

    def __init__(self, host: str, port: int) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[float, UpMessage]] = []
        self._transport = MqttTransport(config=MqttConfig(
            host=host, port=port, client_id=f"bench-flood-cloud-{os.getpid()}",
            clean_session=True))
        self._transport.connect(10.0)
        topics = Topics(thing=THING)
        for message in (Metrics, Event, Ack):  # never the command topic: the flood is there
            self._transport.subscribe(topics.up(message.channel), self._on_message)

    def _on_message(self, _topic: str, payload: bytes) -> None:
        try:
            message = decode(payload, expect=UpMessage)
        except ProtocolError:
            return
        with self._lock:
            self.messages.append((time.monotonic(), message))

    def publish(self, topic: str, payload: bytes) -> None:
        self._transport.publish(topic, payload, qos=1).result(10)

    def since(self, start: float, end: float = float("inf")) -> list[UpMessage]:
        with self._lock:
            return [m for at, m in self.messages if start <= at < end]

    def wait(self, what: str, timeout_s: float, predicate: Any) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench flood: timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self._transport.close()


def _rate(metrics: list[UpMessage]) -> float:
    reports = [m for m in metrics if isinstance(m, Metrics) and "blue" in m.variants]
    if len(reports) < 2:
        raise RuntimeError("bench flood: fewer than two metrics reports in a phase; "
                           "lengthen --seconds")
    first, last = reports[0], reports[-1]
    done = last.variants["blue"].inferences_total - first.variants["blue"].inferences_total
    return done / max(1e-3, (last.sent_at - first.sent_at) / 1000)


@contextmanager
def _agent(models: Path, work: Path, port: int, key_pem: bytes,
           settings: dict[str, Any]) -> Iterator[psutil.Process]:
    (work / "trusted.pem").write_bytes(key_pem)
    (work / "agent.json").write_text(json.dumps(settings))
    argv = [sys.executable, "-m", "agent.cli", "serve", "--thing", THING,
            "--model", str(models / "digits-v1"), "--state-dir", str(work / "state"),
            "--rate", "0", "--metrics-interval", str(_METRICS_S),
            "--heartbeat-interval", "5", "--no-api", "--broker", f"mqtt://127.0.0.1:{port}",
            "--trusted-key", f"ctl-bench={work / 'trusted.pem'}",
            "--config", str(work / "agent.json")]
    with (work / "agent.log").open("wb") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield psutil.Process(child.pid)
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def device_flood(models: Path, *, seconds: float, rounds: int, flood_rate: float,
                 settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The device side: throughput unloaded, under the flood, and unloaded again;
    ``settings`` are the agent's (``{"commands": {...}}``), defaults where absent."""
    keys = generate_keypair("ctl-bench")
    signer = Signer(private_key=keys.private_key(), key_id="ctl-bench")
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        work = Path(tmp)
        with local_broker(work / "mosquitto") as (broker, broker_name), \
                _agent(models, work, broker.port, keys.public_pem,
                       {"commands": {"summaryIntervalSeconds": _SUMMARY_S}, **(settings or {})}
                       ) as agent:
            uplink = _Uplink(broker.host, broker.port)
            try:
                uplink.wait("the agent's first reports", 60, lambda: sum(
                    isinstance(m, Metrics) for m in uplink.since(0)) >= 2)
                result = _phases(uplink, agent, signer, broker, seconds, rounds, flood_rate)
            finally:
                uplink.close()
    result["broker"] = broker_name
    return result


@dataclass
class _Flooding:
    """What the flood phases saw, over all rounds."""

    command_id: str
    rss_before: int
    peak_rss: int = 0
    acked_s: float | None = None
    sent: int = 0
    seconds: float = 0.0


def _flood_phase(uplink: _Uplink, agent: psutil.Process, signer: Signer, broker: Any,
                 payloads: list[bytes], seconds: float, flood_rate: float, seen: _Flooding,
                 command: StatusCommand) -> None:
    topic = Topics(thing=THING).commands
    flood = FloodSender(host=broker.host, port=broker.port, topic=topic, payloads=payloads,
                        rate=flood_rate).start()
    start = time.monotonic()
    next_send = start + 0.25  # once the burst is spent
    while time.monotonic() < start + seconds:
        now = time.monotonic()
        seen.peak_rss = max(seen.peak_rss, agent.memory_info().rss)
        if seen.acked_s is None and any(isinstance(m, Ack) and m.command_id == seen.command_id
                                        for m in uplink.since(start)):
            seen.acked_s = round(seen.seconds + now - start, 2)
        elif seen.acked_s is None and now >= next_send:
            # As the controller does: the same command again, under a new message id.
            uplink.publish(topic, encode(signer.sign(command.model_copy(
                update={"id": new_message_id()}))))
            next_send = now + _RESEND_S
        time.sleep(0.05)
    flood.stop()
    seen.sent += flood.sent
    seen.seconds += flood.elapsed_s


def _phases(uplink: _Uplink, agent: psutil.Process, signer: Signer, broker: Any,
            seconds: float, rounds: int, flood_rate: float) -> dict[str, Any]:
    topic = Topics(thing=THING).commands
    applied = encode(signer.sign(StatusCommand(rollout_id="seen", rollout_seq=1, issued_at=0,
                                               target=Target(kind="thing", name=THING))))
    uplink.publish(topic, applied)  # a command the device applies, for the flood to replay
    uplink.wait("the first ack", 30, lambda: any(isinstance(m, Ack) for m in uplink.since(0)))
    payloads = hostile_payloads(thing=THING, signer=signer, replayed=[applied])
    command = StatusCommand(rollout_id="legit", rollout_seq=1, issued_at=0,
                            target=Target(kind="thing", name=THING))
    seen = _Flooding(command_id=command.command_id, rss_before=agent.memory_info().rss)
    seen.peak_rss = seen.rss_before
    flood_started = time.monotonic()

    def phase(flooded: bool) -> float:
        start = time.monotonic()
        if flooded:
            _flood_phase(uplink, agent, signer, broker, payloads, seconds, flood_rate, seen,
                         command)
        else:
            time.sleep(seconds)
        return _rate(uplink.since(start, time.monotonic()))

    unloaded = [phase(False)]
    loaded = []
    for _ in range(rounds):  # interleaved: the machine's drift hits both alike
        loaded.append(phase(True))
        unloaded.append(phase(False))
    ratios = [f / ((a + b) / 2) for f, a, b in zip(loaded, unloaded, unloaded[1:], strict=False)]
    time.sleep(_SUMMARY_S + 0.5)  # the last summary
    events = [m for m in uplink.since(flood_started) if isinstance(m, Event)
              and m.kind == "rejected_message"]
    summaries = [e for e in events if e.data.get("code") == "rate_limited"]
    return {
        "inference_unloaded_per_s": round(statistics.median(unloaded)),
        "inference_flood_per_s": round(statistics.median(loaded)),
        "throughput_ratio": round(statistics.median(ratios), 4),
        "flood_rate_per_s": round(seen.sent / seen.seconds) if seen.seconds else 0,
        "flood_messages": seen.sent,
        "command_acked_s": seen.acked_s,
        "rss_growth_mib": round((seen.peak_rss - seen.rss_before) / 2**20, 1),
        "rejection_events": len(events) - len(summaries), "summary_events": len(summaries),
        "suppressed": sum(int(e.data.get("suppressed") or 0) for e in summaries),
        "rounds": rounds,
    }


def controller_ingest(*, seconds: float, legit_devices: int,
                      flood_rate: float) -> dict[str, float | int]:
    """The controller side, as :mod:`agent.tools.bench.flood_ingest` measures it."""
    return measure_ingest(seconds=seconds, legit_devices=legit_devices, flood_rate=flood_rate)


def run_bench(models: Path, *, seconds: float, rounds: int, flood_rate: float,
              legit_devices: int) -> dict[str, Any]:
    result = {**device_flood(models, seconds=seconds, rounds=rounds, flood_rate=flood_rate),
              "seconds_per_phase": seconds}
    ingest = controller_ingest(seconds=seconds, legit_devices=legit_devices,
                               flood_rate=flood_rate)
    result.update({f"ingest_{key}": value for key, value in ingest.items()})
    sent = ingest.get("legit_sent", 0)
    result["ingest_ratio"] = round(ingest.get("legit_ingested", 0) / sent, 4) if sent else 0.0
    return result


def bench_flood_main(args: argparse.Namespace) -> int:
    result = run_bench(args.models, seconds=args.seconds, rounds=args.rounds,
                       flood_rate=args.flood_rate,
                       legit_devices=args.legit_devices)
    emit(result, as_json=args.json)
    return 0

