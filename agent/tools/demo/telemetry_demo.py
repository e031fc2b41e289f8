"""``edge-agent demo telemetry``: one device talking to a cloud side, end to end, on a laptop.

Starts a broker (mosquitto when installed, else the embedded one), a real
``edge-agent serve`` process for an emulated board, and a cloud-side client
that validates and prints every message it receives. Midway the broker is
stopped for a few seconds (the agent keeps serving and spooling) and then the
cloud sends a signed status request. At the end the agent is stopped with
SIGTERM and the client checks that every sequence number arrived exactly once.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from agent.tools.brokers.embedded import EmbeddedBroker
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.wire.codec import decode, encode
from agent.wire.commands import StatusCommand, Target
from agent.wire.keys import generate_keypair
from agent.wire.messages import UpMessage
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import Signer
from agent.wire.topics import Topics


def _describe(m: Any) -> str:
    if m.type == "metrics":
        blue = m.variants["blue"]
        temp = m.health.soc_temp_c if m.health else None
        return (f"{blue.inferences} inferences, {blue.throughput_per_s:.0f}/s, p99 "
                f"{blue.p99_us or 0:.1f} us, SoC {temp} C")
    if m.type == "heartbeat":
        return f"up {m.uptime_s:.1f} s"
    if m.type == "register":
        return f"{m.profile.board} -> {m.profile.neo_target}, models {m.models}"
    if m.type == "event":
        return f"{m.kind}: {m.detail}"
    if m.type == "ack":
        return f"{m.command_id[:8]} {m.outcome} {m.reason}"
    if m.type == "state":
        return f"models {m.models}, mode {m.mode}" + (
            f", answering {m.in_reply_to[:8]}" if m.in_reply_to else "")
    return ""


def run_demo(models: Path, *, board: str, seconds: float) -> int:
    thing = f"demo-{board.replace('_', '-')}"
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp:
        work = Path(tmp)
        keys = generate_keypair("demo-controller")
        (work / "controller.pub").write_bytes(keys.public_pem)
        broker: Any = MosquittoBroker(workdir=work / "broker") if find_mosquitto() \
            else EmbeddedBroker()
        broker.start()
        received: list[UpMessage] = []
        lock = threading.Lock()

        def on_message(topic: str, payload: bytes) -> None:
            m = decode(payload, expect=UpMessage)
            with lock:
                received.append(m)
            print(f"  cloud <- {m.type:9} seq {m.seq:>5}  {_describe(m)}", flush=True)

        cloud = MqttTransport(config=MqttConfig(host=broker.host, port=broker.port,
                                                client_id="demo-cloud"))
        cloud.connect(10)
        topics = Topics(thing=thing)
        cloud.subscribe(topics.own_filter, lambda t, p: None
                        if t.endswith(("/emf", "/commands")) else on_message(t, p))
        agent = subprocess.Popen([
            sys.executable, "-m", "agent.cli", "serve", "--thing", thing,
            "--model", str(models / "digits-v1"), "--board", board, "--rate", "200",
            "--api-port", "0",
            "--state-dir", str(work / "state"), "--metrics-interval", "1",
            "--heartbeat-interval", "3", "--broker", f"mqtt://{broker.host}:{broker.port}",
            "--trusted-key", f"demo-controller={work / 'controller.pub'}",
            "--log-level", "WARNING"])
        try:
            time.sleep(seconds / 2)
            if isinstance(broker, MosquittoBroker):
                print("  -- broker down for 3 s: the agent keeps serving and spooling --")
                broker.stop()
                time.sleep(3)
                broker.start()
            command = Signer(private_key=keys.private_key(), key_id=keys.key_id).sign(
                StatusCommand(target=Target(kind="thing", name=thing), rollout_id="demo",
                              rollout_seq=1, command_id=uuid.uuid4().hex,
                              issued_at=int(time.time() * 1000)))
            deadline = time.monotonic() + 30
            while not cloud.is_connected() and time.monotonic() < deadline:
                time.sleep(0.1)  # the cloud client reconnects after the outage too
            print(f"  cloud -> signed status request {command.command_id[:8]}")
            cloud.publish(topics.commands, encode(command)).result(30)
            time.sleep(seconds / 2)
        finally:
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(60)
            time.sleep(1.0)
            cloud.close()
            broker.stop()
        with lock:
            unique = {m.id: m for m in received}
        seqs = sorted(m.seq for m in unique.values())
        complete = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False
        print(f"  agent exited {code}; {len(unique)} messages, {len(received) - len(unique)} "
              f"duplicate(s) dropped by id; every sequence number exactly once: {complete}")
        return 0 if code == 0 and complete else 1


def demo_telemetry_main(args: argparse.Namespace) -> int:
    return run_demo(args.models, board=args.board, seconds=args.seconds)
