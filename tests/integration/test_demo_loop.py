"""The loop demo, shortened: real agent processes capture low-confidence inputs of a
shifted field stream to a loopback S3 server, ``capture pull`` / ``label`` / ``export``
build the training channel, ``models.digits.train`` trains v3 (twice: the same weights),
and the controller promotes v3 through a shadow phase and a canary because it beats v1
against the labels; v3 beats v1 on the held-out shifted set, and nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from agent.tools.demo.loop_demo import run_loop_demo
from agent.tools.demo.loop_options import LoopOptions
from agent.tools.s3.local_server import moto_missing_reason

pytestmark = pytest.mark.skipif(bool(moto_missing_reason()), reason=moto_missing_reason())


def _left_running(folder: Path) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = process.info.get("cwd") or ""
        if cwd.startswith(str(folder)) and process.pid != os.getpid():
            found.append(f"{process.pid} {' '.join(process.info.get('cmdline') or [])}")
    return found


@pytest.mark.timeout(300)
def test_short_loop_demo_end_to_end(built_models: Path, shared_broker: object,
                                    tmp_path: Path) -> None:
    out = tmp_path / "loop"
    options = LoopOptions(out=out, models=built_models, devices=3, min_captures=200,
                          shadow_s=3.0, bake_s=2.0, broker=shared_broker.url,  # type: ignore[attr-defined]
                          thing_prefix="loop-test")
    lines: list[str] = []
    started = time.monotonic()
    result = run_loop_demo(options, say=lines.append)
    elapsed = time.monotonic() - started
    text = "\n".join(lines)
    assert result.ok, text
    assert elapsed < 200, f"the shortened demo took {elapsed:.0f} s\n{text}"

    # before / after: v1 fails on the shift, v3 fixes it and keeps the original digits
    v1, v3 = result.figures.v1, result.figures.v3
    assert v1 is not None and v3 is not None
    assert v1.original_test > 0.95 and v1.shifted_heldout < 0.7, v1
    assert v3.shifted_heldout - v1.shifted_heldout >= options.margin, (v1, v3)
    assert v3.original_test > 0.93, v3
    assert "digits-v3 beats digits-v1 on the held-out shifted set by +" in text

    stages = result.figures.stages
    captured, dataset, training = stages["capture"], stages["dataset"], stages["training"]
    assert captured["captures_uploaded"] >= options.min_captures, captured
    assert dataset["pull"]["captures_new"] >= options.min_captures, dataset
    by_rule = dataset["pull"]["new_by_rule"]
    assert set(by_rule) <= {"low_confidence", "sample"} and by_rule["low_confidence"] > 0
    # every captured input maps back to a stream sample: the labelling covers all of them
    assert dataset["not_from_stream"] == 0 and dataset["labelled"]["unlabelled"] == 0
    assert dataset["export"]["rows"] == dataset["pull"]["captures_new"]
    assert "stands in for a person" in text
    # the same captures and seed give the same weights
    assert training["deterministic"] is True and len(training["weights_sha256"]) == 64
    assert f"weights sha256 {training['weights_sha256']}, the same on a second run" in text

    # low-confidence captures are below the threshold, as the served v1 scored them
    index = [json.loads(line) for line in (out / "dataset" / "index.jsonl").read_text()
             .splitlines() if line.strip()]
    low = [e for e in index if e["rule"] == "low_confidence"]
    assert low and all(e["score"] < options.low_confidence for e in low), low[:3]
    exported = np.load(out / "export" / "train.npz")
    assert exported["x"].shape == (len(index), 64) and exported["y"].dtype == np.int64

    # promoted through shadow -> canary -> the rest, on the labelled comparison
    rollout = stages["rollout"]
    assert (rollout["status"], rollout["steps"]) == ("succeeded", 3), rollout
    shadow = rollout["shadow"]
    assert shadow["green_accuracy"] - shadow["blue_accuracy"] >= options.min_accuracy_gain
    assert [v["status"] for v in rollout["verdicts"]] == ["pass", "pass", "pass"], rollout
    assert "confirm: 3/3 acknowledged (3 confirmed)" in text, text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["heldout_gain"] >= options.margin
    assert (out / "loop.png").stat().st_size > 10_000
    assert (out / "loop-digits-v3.json").is_file()
    assert stages["stopped"]["all_stopped"], stages["stopped"]
    assert not _left_running(out)


def test_the_command_refuses_a_fleet_without_a_canary_and_the_rest(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "loop", "--devices", "1",
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "ConfigError: --devices must be at least 2" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_fails_with_the_reason_when_v3_is_not_better_enough(tmp_path: Path) -> None:
    from agent.tools.demo.fleet_rollouts import RolloutOutcome
    from agent.tools.demo.loop_demo import loop_verdict
    from agent.tools.demo.loop_report import Accuracies, LoopFigures

    options = LoopOptions(out=tmp_path, models=tmp_path, margin=0.2)
    done = RolloutOutcome(rollout_id="r", strategy="s", devices=3, status="succeeded",
                          reason="", decision_s=1.0, steps=3)
    figures = LoopFigures(v1=Accuracies(0.97, 0.5, 0.55), v3=Accuracies(0.97, 0.6, 0.9),
                          stages={"stopped": {"all_stopped": True}})
    ok, reason = loop_verdict(options, figures, done)
    assert not ok and "by +10.0 points, under the 20 the demo asserts" in reason
    figures.v3 = Accuracies(0.97, 0.9, 0.95)
    assert loop_verdict(options, figures, done)[0]
    paused = RolloutOutcome(rollout_id="r", strategy="s", devices=3, status="paused",
                            reason="step shadow undecided", decision_s=60.0, steps=3)
    ok, reason = loop_verdict(options, figures, paused)
    assert not ok and "did not succeed: paused step shadow undecided" in reason
    figures.stages["training"] = {"deterministic": False}
    ok, reason = loop_verdict(options, figures, done)
    assert not ok and "gave different weights" in reason
    figures.stages["training"] = {"deterministic": True}
    figures.stages["stopped"] = {"all_stopped": False, "alive": [123]}
    ok, reason = loop_verdict(options, figures, done)
    assert not ok and "processes left running" in reason
