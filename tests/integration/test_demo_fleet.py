"""The emulated-fleet demo, shortened (4 devices, short bakes): every device is a real
agent that an emulated nucleus installed and started from the Greengrass components;
the three rollouts end as they must, a device offline during the rollback is rolled
back on return, the reports are written, and nothing is left running - Ctrl-C included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.tools.demo.fleet_demo import run_demo
from agent.tools.demo.fleet_options import DemoOptions


def _left_running(folder: Path) -> list[str]:
    """Processes whose working folder is under ``folder`` (the demo's devices run there)."""
    found = []
    for process in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = process.info.get("cwd") or ""
        if cwd.startswith(str(folder)) and process.pid != os.getpid():
            found.append(f"{process.pid} {' '.join(process.info.get('cmdline') or [])}")
    return found


def test_short_demo_end_to_end(built_models: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "demo"
    options = DemoOptions(out=out, models=built_models, devices=4, bake_s=3.0, shadow_s=3.0)
    result = run_demo(options, say=lines.append)
    text = "\n".join(lines)
    assert result.ok, text
    first, slow, wrong = result.outcomes
    assert (first.status, first.steps) == ("succeeded", 3), text  # canary, then linear x2
    assert slow.status == "rolled_back" and "p99" in slow.reason, slow.reason
    assert wrong.status == "rolled_back" and "agreement" in wrong.reason, wrong.reason
    assert result.offline_device is not None, text
    assert f"{result.offline_device} serves digits-v2 again" in text
    # The devices keep the recipe's trialSeconds: the controller's confirm ends each trial.
    assert "confirm: 4/4 acknowledged (4 confirmed)" in text, text
    assert result.devices[result.offline_device]["starts"] == 2
    # Taken offline as a nucleus stops a component: it answered SIGTERM in time.
    assert result.devices[result.offline_device]["stops"] == [
        "FINISHED: exited 0 on SIGTERM"], result.devices[result.offline_device]

    for thing, device in result.devices.items():
        assert device["online"], thing
        states = device["states"]
        for expected in ("INSTALLED (nucleus)", "RUNNING (nucleus)", "RUNNING (component)"):
            assert expected in states, (thing, states)
        relayed = device["relayed_via_ipc"]  # published by the agent over IPC, not MQTT
        # The offline device's second nucleus saw only the part after it came back, so
        # its count depends on how long the rest of the demo ran: at least one there.
        least = 1 if thing == result.offline_device else 4
        assert relayed.get("register", 0) >= 1 and relayed.get("metrics", 0) >= least, relayed
        assert relayed.get("ack", 0) >= 2, relayed

    names = sorted(p.name for p in result.reports)
    assert names == sorted(f"{o.rollout_id}.{ext}" for o in result.outcomes
                           for ext in ("json", "png"))
    report = json.loads((out / "r2-digits-slow.json").read_text())
    assert report["rollout"]["status"] == "rolled_back"
    assert any(a["action"] == "rollback" and a["thing"] == result.offline_device
               and a["outcome"] == "ok" for a in report["assignments"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and len(summary["outcomes"]) == 3
    assert _left_running(out) == []


@pytest.mark.timeout(180)
def test_ctrl_c_stops_everything(built_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "demo", "fleet", "--models", str(built_models),
         "--out", str(out), "--devices", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    for line in process.stdout:
        seen.append(line)
        if "devices registered" in line or time.monotonic() > deadline:
            break
    assert any("devices registered" in line for line in seen), "".join(seen)
    assert _left_running(out), "the devices' agents run under the output folder"
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(seen) + rest
    assert "every process the demo started has been stopped" in rest
    assert _left_running(out) == []


@pytest.mark.slow
def test_short_demo_over_mutual_tls(built_models: Path, tmp_path: Path) -> None:
    """``--endpoint`` as with AWS IoT Core: every nucleus and the controller connect with
    a client certificate to a broker that requires one (mosquitto stands in for IoT Core)."""
    from mqtt_brokers import running_mosquitto

    from agent.tools.brokers.certs import make_test_pki
    from agent.tools.brokers.mosquitto import MosquittoTls

    pki = make_test_pki(tmp_path / "pki")
    tls = MosquittoTls(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key,
                       require_certificate=True)
    with running_mosquitto(tmp_path / "broker", tls=tls) as broker:
        options = DemoOptions(out=tmp_path / "demo", models=built_models, devices=4,
                              bake_s=3.0, shadow_s=3.0, endpoint=f"localhost:{broker.port}",
                              cert=pki.client_cert, key=pki.client_key, ca=pki.ca_cert)
        lines: list[str] = []
        result = run_demo(options, say=lines.append)
    assert result.ok, "\n".join(lines)
    assert any("(mutual TLS)" in line for line in lines)
