"""An operator's rollouts on real agents over mosquitto, through the `edge-agent rollout`
commands as separate processes: a controller started after its devices on an empty
database, back-to-back rollouts with the agents' default trial, a label mismatch, a failing
start, promote on a paused step, and abort with and without a running controller. Every
outcome is checked on the devices themselves: their model store and their metrics."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_process import AgentProcess
from cloud import CloudSubscriber

from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
THINGS = ("op-1", "op-2")
HEARTBEAT_S = 10.0  # the agents' heartbeat interval: discovery must not wait for it


class World:
    """One broker, two real agents in group ``lab`` (default ``trialSeconds``), keys."""

    def __init__(self, tmp: Path, models: Path) -> None:
        self.tmp, self.models = tmp, models
        self.broker = MosquittoBroker(workdir=tmp / "broker")
        self.broker.start()
        keys = keys_generate(tmp / "keys", "ctl-op")
        self.private = keys.private
        self.signer = Signer.from_file(keys.private, key_id="ctl-op")
        self.cloud = CloudSubscriber(host="127.0.0.1", port=self.broker.port,
                                     topic="edge/+/+").start()
        self.agents = [AgentProcess(
            thing=thing, model=models / "digits-v1", state_dir=tmp / thing,
            broker_port=self.broker.port, log_path=tmp / f"{thing}.log", rate=100,
            metrics_interval=0.5, heartbeat_interval=HEARTBEAT_S,
            extra=["--groups", "lab", "--trusted-key", f"ctl-op={keys.public}",
                   "--package-dir", str(tmp / "packages")]).start()
            for thing in THINGS]
        self.cloud.wait_for(lambda ms: {m.thing for m in ms if m.type == "register"}
                            >= set(THINGS), 60, "both agents to register")

    def package(self, model: str) -> dict[str, Any]:
        """The package of ``model`` at its own version (its label is the model's name)."""
        path = build_package(self.models / model, "linux_x86_64-x86_64", signer=self.signer,
                             out_dir=self.tmp / "packages")
        version = int(model.rsplit("-v", 1)[1])
        return {"linux_x86_64": {"url": path.as_uri(), "version": version,
                                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}

    def spec(self, name: str, model: str, *, package_of: str | None = None,
             **extra: Any) -> Path:
        spec = {"name": name, "model": model, "groups": ["lab"],
                "packages": self.package(package_of or model),
                "strategy": {"type": "all_at_once", "watch_s": 1},
                "guardrails": {"min_samples": 30}, "timing": {"step_timeout_s": 60}, **extra}
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def controller_args(self, db: Path) -> list[str]:
        return ["--broker", f"mqtt://127.0.0.1:{self.broker.port}", "--signing-key",
                str(self.private), "--key-id", "ctl-op", "--db", str(db)]

    def stored(self, thing: str) -> dict[str, Any]:
        """The device's model store as it is on disk: the current version's manifest and
        whether it is on trial."""
        root = self.tmp / thing / "models"
        current = root / "current"
        if not current.exists():
            return {"label": "digits-v1", "trial": False}  # its unsigned development model
        version_id = json.loads(current.read_text())["version_id"]
        manifest = json.loads((root / "versions" / version_id / "manifest.json").read_text())
        return {"label": manifest["label"], "trial": (root / "trial").exists()}

    def reported(self, thing: str) -> str | None:
        """The blue model of the device's newest metrics report."""
        latest = [m for m in self.cloud.of_type("metrics") if m.thing == thing]
        return latest[-1].variants["blue"].model_version if latest else None

    def wait_serving(self, label: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = {t: (self.stored(t), self.reported(t)) for t in THINGS}
            if all(s["label"] == label and r == label for s, r in seen.values()):
                return
            time.sleep(0.2)
        raise AssertionError(f"devices do not all serve {label}: {seen}")

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.cloud.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("operator"), built_models)
    yield w
    w.close()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "rollout", *args],
                          capture_output=True, text=True, timeout=timeout)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "rollout", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_line(process: subprocess.Popen[str], text: str, timeout_s: float = 60) -> list[str]:
    """Lines the process printed up to the first holding ``text``."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip())
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(lines))


def test_a_failing_start_leaves_no_rollout(world: World) -> None:
    db = world.tmp / "failing.db"
    unknown = world.spec("r-nowhere", "digits-v2", groups=["nowhere"])
    out = cli("start", str(unknown), *world.controller_args(db), "--discover", "2")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no device of nowhere answered" in out.stderr
    fleet = world.tmp / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"groups": {"ghosts": ["nobody"]}}))
    ghosts = world.spec("r-ghosts", "digits-v2", groups=["ghosts"])
    out = cli("start", str(ghosts), *world.controller_args(db), "--fleet", str(fleet),
              "--discover", "2")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "nobody: in the fleet file, not heard from" in out.stdout
    listing = cli("list", "--db", str(db))
    assert listing.returncode == 0 and listing.stdout == "", listing.stdout


def test_discovery_on_an_empty_database_and_back_to_back_rollouts(world: World) -> None:
    db = world.tmp / "fresh.db"  # the devices started long before this controller
    first = cli("start", str(world.spec("r-first", "digits-v2")), *world.controller_args(db))
    assert first.returncode == 0, first.stdout + first.stderr
    found = re.search(r"discovered 2 device\(s\) in ([0-9.]+) s:", first.stdout)
    assert found and "lab: 2 (linux_x86_64 x2)" in first.stdout, first.stdout
    # Planned within one heartbeat interval: the announce was answered, not waited out.
    assert float(found.group(1)) < HEARTBEAT_S, first.stdout
    assert "confirm: 2/2 acknowledged (2 confirmed)" in first.stdout, first.stdout
    assert "r-first: succeeded" in first.stdout
    assert "effective guardrails:" in first.stdout and "min_samples: 30 (spec)" in first.stdout
    world.wait_serving("digits-v2")
    assert not any(world.stored(t)["trial"] for t in THINGS), "the rollout ended the trials"

    second = cli("start", str(world.spec("r-second", "digits-v1")), *world.controller_args(db))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "r-second: succeeded" in second.stdout and "rejected" not in second.stdout
    world.wait_serving("digits-v1")


def test_a_label_mismatch_stops_the_rollout_with_that_message(world: World) -> None:
    db = world.tmp / "label.db"
    spec = world.spec("r-label", "digits-v7", package_of="digits-v2")
    out = cli("start", str(spec), *world.controller_args(db))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "device op-1 was sent digits-v2, the spec expects digits-v7" in out.stdout or \
        "device op-2 was sent digits-v2, the spec expects digits-v7" in out.stdout, out.stdout
    status = cli("status", "r-label", "--db", str(db))
    assert "label_mismatch" in status.stdout, status.stdout
    world.wait_serving("digits-v1")  # nothing of the mismatched package serves


def test_promote_advances_a_paused_rollout_from_another_terminal(world: World) -> None:
    db = world.tmp / "promote.db"
    # Guardrails that can never be met: every step pauses after its timeout.
    spec = world.spec("r-promote", "digits-v2",
                      strategy={"type": "linear", "steps": 2, "step_interval_s": 1},
                      guardrails={"min_samples": 10**9}, timing={"step_timeout_s": 2})
    start = spawn("start", str(spec), *world.controller_args(db))
    try:
        wait_line(start, "paused: step linear-1/2 undecided")
        promoted = cli("promote", "r-promote", "--db", str(db))
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "advanced to step 2 linear-2/2: commands for 1 device(s)" in promoted.stdout
        wait_line(start, "paused: step linear-2/2 undecided")
        deadline = time.monotonic() + 30
        while True:  # the next step's commands are acknowledged by its device
            status = cli("status", "r-promote", "--db", str(db))
            step2 = next(line for line in status.stdout.splitlines() if "step 2:" in line)
            if "stage=ok" in step2 and "promote=ok" in step2:
                break
            assert time.monotonic() < deadline, status.stdout
            time.sleep(0.5)
        done = cli("promote", "r-promote", "--db", str(db))
        assert "succeeded: confirm sent to 2 device(s)" in done.stdout, done.stdout
        out, _ = start.communicate(timeout=60)
        assert start.returncode == 0, out
        assert "r-promote: succeeded (promoted by operator)" in out or \
            "r-promote: succeeded" in out, out
    finally:
        if start.poll() is None:
            start.kill()
    world.wait_serving("digits-v2")


def test_abort_rolls_every_device_back_even_without_a_running_controller(
        world: World) -> None:
    db = world.tmp / "abort.db"
    spec = world.spec("r-abort", "digits-v1", guardrails={"min_samples": 10**9},
                      timing={"step_timeout_s": 2})
    paused = cli("start", str(spec), *world.controller_args(db), "--exit-on-pause")
    assert paused.returncode == 4, paused.stdout + paused.stderr
    world.wait_serving("digits-v1")  # green serves while the rollout is paused
    aborted = cli("abort", "r-abort", "--db", str(db))
    assert aborted.returncode == 5, aborted.stdout + aborted.stderr
    assert "no controller runs on" in aborted.stdout
    serve = spawn("serve", *world.controller_args(db))
    try:
        wait_line(serve, "r-abort")  # the pending abort is acted on at the first tick
        world.wait_serving("digits-v2")
        status = cli("status", "r-abort", "--db", str(db))
        assert "request #1 abort: rollback sent to 2 device(s)" in status.stdout, \
            status.stdout
        deadline = time.monotonic() + 20
        while "rollback: 2/2 acknowledged (2 rolled back)" not in status.stdout:
            assert time.monotonic() < deadline, status.stdout
            time.sleep(0.5)
            status = cli("status", "r-abort", "--db", str(db))
        assert "r-abort: aborted" in status.stdout and "(by operator" in status.stdout
        # With the controller up, a request's effect is printed at once.
        again = cli("abort", "r-abort", "--db", str(db))
        assert again.returncode == 2 and "it is aborted" in again.stderr
    finally:
        serve.terminate()
        serve.wait(20)
