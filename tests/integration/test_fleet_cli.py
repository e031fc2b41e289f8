"""`edge-agent rollout …` as an operator runs it, against a simulated fleet over mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.fleet_sim.simulate import ModelBehaviour, SimulatedFleet
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer, TrustStore

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (apt-get install mosquitto)")
SHA = "0" * 64


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path, Callable[[], None]]]:
    broker = MosquittoBroker(workdir=tmp_path / "broker")
    broker.start()
    keys = keys_generate(tmp_path, "ctl-1")
    fleet = SimulatedFleet(
        broker_host="127.0.0.1", broker_port=broker.port, devices=40,
        groups={"canary": 0.25, "fleet": 0.75},
        trust=TrustStore.from_files({"ctl-1": keys.public}), report_interval_s=0.5,
        heartbeat_interval_s=2.0, inference_rate_hz=40, trial_s=1.0,
        green={"digits-v2": ModelBehaviour(median_ms=2.0),
               "digits-v1-slow": ModelBehaviour(median_ms=25.0)}, seed=1)
    assert Signer.from_file(keys.private, key_id="ctl-1")
    yield broker, tmp_path, fleet.start
    fleet.stop()
    broker.stop()


def _spec(tmp: Path, name: str, model: str) -> Path:
    spec = {"name": name, "model": model, "groups": ["canary", "fleet"],
            "packages": {t: {"url": f"https://models.example/{model}.tar.gz", "sha256": SHA,
                             "version": 2} for t in ("rasp4b", "jetson_nano", "linux_x86_64")},
            "strategy": {"type": "canary", "group": "canary", "bake_s": 2},
            "guardrails": {"min_samples": 50, "min_devices": 2, "max_p99_ratio": 3.0},
            "timing": {"step_timeout_s": 60}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_rollout_start_status_list(
        world: tuple[MosquittoBroker, Path, Callable[[], None]]) -> None:
    broker, tmp, start_fleet = world
    db = str(tmp / "controller.db")
    common = ["--broker", f"mqtt://127.0.0.1:{broker.port}",
              "--signing-key", str(tmp / "ctl-1.key"), "--key-id", "ctl-1", "--db", db,
              "--discover", "4"]
    # The controller is up first and hears the devices register; the second controller
    # process knows them from its database.
    first = subprocess.Popen([sys.executable, "-m", "agent.cli", "rollout", "start",
                              str(_spec(tmp, "r-good", "digits-v2")), *common],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    start_fleet()
    out, err = first.communicate(timeout=180)
    good = subprocess.CompletedProcess(first.args, first.returncode, out, err)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "step 1/2 canary:" in good.stdout and "r-good: succeeded" in good.stdout

    bad = _cli("rollout", "start", str(_spec(tmp, "r-slow", "digits-v1-slow")), *common)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "r-slow: rolled_back" in bad.stdout and "p99" in bad.stdout

    status = _cli("rollout", "status", "r-slow", "--db", db, "--json")
    record = json.loads(status.stdout.strip().splitlines()[-1])
    assert record["status"] == "rolled_back"
    rollbacks = [a for a in record["assignments"] if a["action"] == "rollback"]
    assert rollbacks and all(a["outcome"] == "ok" for a in rollbacks)
    listing = _cli("rollout", "list", "--db", db)
    assert "r-good\tsucceeded" in listing.stdout and "r-slow\trolled_back" in listing.stdout
    for rollout_id, status in (("r-good", "succeeded"), ("r-slow", "rolled_back")):
        report = _cli("rollout", "report", rollout_id, "--db", db, "--out", str(tmp / "reports"))
        assert report.returncode == 0, report.stderr
        assert json.loads((tmp / "reports" / f"{rollout_id}.json").read_text())[
            "rollout"]["status"] == status
        png = tmp / "reports" / f"{rollout_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "model": "m", "groups": ["a"],
                                    "packages": {"rasp4b": {"url": "https://x/y", "sha256": SHA,
                                                            "version": 1}},
                                    "strategy": {"type": "linear", "steps": 0,
                                                 "step_interval_s": 1},
                                    "guardrails": {"min_samples": 1}}))
    out = _cli("rollout", "start", str(spec), "--broker", "mqtt://127.0.0.1:1", "--signing-key",
               str(spec), "--key-id", "k", "--db", str(tmp_path / "db"))
    assert out.returncode == 2 and "strategy.steps" in out.stderr
