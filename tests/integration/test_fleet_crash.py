"""The controller killed at each named crash point, and at seeded random ones, during a
linear rollout over a simulated fleet: restarted, it ends where an uninterrupted run ends,
and no device is given two different decisions for one step."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.controller.state import ControllerState
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.fleet_sim.simulate import BreachSpec, ModelBehaviour, SimulatedFleet
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import TrustStore

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
SHA = "0" * 64
POINTS = ("controller-after-decide", "controller-after-publish", "controller-mid-rollback")


def _spec(tmp: Path, name: str) -> Path:
    spec = {"name": name, "model": "digits-v2", "groups": ["a", "b"],
            "packages": {t: {"url": "https://models.example/v2.tar.gz", "sha256": SHA,
                             "version": 2} for t in ("rasp4b", "jetson_nano", "linux_x86_64")},
            "strategy": {"type": "linear", "steps": 3, "step_interval_s": 1.5},
            "guardrails": {"min_samples": 20, "min_devices": 1, "max_p99_ratio": 3.0},
            "timing": {"step_timeout_s": 60}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class World:
    def __init__(self, tmp: Path, *, breach: bool) -> None:
        self.tmp = tmp
        self.broker = MosquittoBroker(workdir=tmp / "broker")
        self.broker.start()
        keys = keys_generate(tmp, "ctl-1")
        self.fleet = SimulatedFleet(
            broker_host="127.0.0.1", broker_port=self.broker.port, devices=24,
            groups={"a": 0.5, "b": 0.5}, trust=TrustStore.from_files({"ctl-1": keys.public}),
            report_interval_s=0.5, heartbeat_interval_s=2.0, inference_rate_hz=60,
            trial_s=0.5, green={"digits-v2": ModelBehaviour(median_ms=2.0)}, seed=3,
            breach=BreachSpec(label="digits-v2", cohort="a") if breach else None)
        self.db = tmp / "controller.db"
        self.started = False

    def controller(self, spec: Path, crash_at: str | None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_CRASH_AT"}
        if crash_at:
            env["EDGE_AGENT_CRASH_AT"] = crash_at
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "rollout", "start", str(spec), "--broker",
             f"mqtt://127.0.0.1:{self.broker.port}", "--signing-key", str(self.tmp / "ctl-1.key"),
             "--key-id", "ctl-1", "--db", str(self.db), "--discover", "2.5", "--settle", "15"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if not self.started:  # the first controller hears the devices register
            time.sleep(1.0)
            self.fleet.start()
            self.started = True
        return process

    def run(self, spec: Path, crash_at: str | None) -> tuple[int, str]:
        process = self.controller(spec, crash_at)
        out, _ = process.communicate(timeout=240)
        return process.returncode, out

    def serving(self) -> dict[str, str]:
        return {t: str(self.fleet.view(t).state.get("models", {}).get("blue"))
                for t in self.fleet.things}

    def close(self) -> None:
        if self.started:
            self.fleet.stop()
        self.broker.stop()


@pytest.fixture
def world_ok(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, breach=False)
    yield w
    w.close()


@pytest.fixture
def world_breach(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, breach=True)
    yield w
    w.close()


def _check_decisions(db: Path, rollout: str) -> dict[str, Any]:
    with ControllerState(path=db) as state:
        record = state.rollout(rollout)
        assert record is not None
        seen: dict[tuple[str, int, int], set[str]] = {}
        for a in state.assignments(rollout):
            seen.setdefault((a.thing, a.step_index, a.ordinal), set()).add(
                f"{a.action}:{sorted(a.args.items())}")
        assert all(len(v) == 1 for v in seen.values()), "one decision per device and step"
        return {"status": record.status}


def _kill_then_finish(world: World, spec: Path, point: str) -> str:
    code, out = world.run(spec, point)
    assert code == -9, f"not killed at {point}:\n{out}"
    code, out = world.run(spec, None)
    return out


def test_linear_rollout_survives_a_kill_after_decide_and_after_publish(
        world_ok: World) -> None:
    spec = _spec(world_ok.tmp, "r-lin")
    for point in ("controller-after-decide:2", "controller-after-publish:9"):
        _kill_then_finish(world_ok, spec, point)
        if _check_decisions(world_ok.db, "r-lin")["status"] == "succeeded":
            break
    assert _check_decisions(world_ok.db, "r-lin")["status"] == "succeeded"
    deadline = time.monotonic() + 20
    while set(world_ok.serving().values()) != {"digits-v2"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(world_ok.serving().values()) == {"digits-v2"}


def test_kill_in_the_middle_of_a_fleet_wide_rollback(world_breach: World) -> None:
    spec = _spec(world_breach.tmp, "r-breach")
    _kill_then_finish(world_breach, spec, "controller-mid-rollback")
    assert _check_decisions(world_breach.db, "r-breach")["status"] == "rolled_back"
    deadline = time.monotonic() + 20
    while set(world_breach.serving().values()) != {"digits-v1"} and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(world_breach.serving().values()) == {"digits-v1"}, "every device back on blue"


def test_ten_seeded_random_kills(world_ok: World) -> None:
    """Ten kills at random points and occurrences across linear rollouts; every rollout
    still ends succeeded with one decision per device and step."""
    rng = random.Random(7)
    kills, rollout, finished = 0, 0, []
    spec = _spec(world_ok.tmp, f"r-rand-{rollout}")
    while kills < 10:
        point = rng.choice(POINTS[:2])
        code, out = world_ok.run(spec, f"{point}:{rng.randint(1, 3)}")
        kills += code == -9
        status = _check_decisions(world_ok.db, f"r-rand-{rollout}")["status"]
        if status == "succeeded":
            finished.append(rollout)
            rollout += 1
            spec = _spec(world_ok.tmp, f"r-rand-{rollout}")
    code, out = world_ok.run(spec, None)  # the last one, without a kill
    assert code == 0, out
    for k in [*finished, rollout]:
        assert _check_decisions(world_ok.db, f"r-rand-{k}")["status"] == "succeeded"
