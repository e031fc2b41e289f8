"""``edge-agent`` as a user runs it: real subprocesses, real output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.emulation.boards import BOARDS_DIR

FIXTURES = BOARDS_DIR


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("backend", ["dlr", "onnx"])
def test_run_prints_a_json_summary(built_models: Path, backend: str) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v1"), "--backend", backend,
               "--count", "500", "--duration", "30", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["inferences"] == 500 and summary["errors"] == 0
    assert summary["accuracy"] >= 0.95
    assert summary["latency_p99_us"] >= summary["latency_p50_us"] > 0


def test_run_live_output_on_an_emulated_raspberry_pi(built_models: Path) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v1"), "--source", "random",
               "--duration", "1.5", "--device-root", str(FIXTURES / "rpi4_64"))
    assert out.returncode == 0, out.stderr
    assert "rasp4b" in out.stdout and "emulated" in out.stdout
    assert "target=rasp4b arch=x86_64 emulated=True" in out.stdout
    assert "/s" in out.stdout and "p99" in out.stdout


def test_run_on_a_bundled_emulated_jetson(built_models: Path) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v2"), "--board", "jetson_nano_r32",
               "--count", "200", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["inferences"] == 200
    unknown = _cli("run", "--model", str(built_models / "digits-v2"), "--board", "cray")
    assert unknown.returncode == 2 and "unknown board 'cray'" in unknown.stderr


def test_run_shm_source_paced(built_models: Path) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v1"), "--source", "shm",
               "--rate", "500", "--duration", "1", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert 100 <= summary["inferences"] <= 520
    assert summary["accuracy"] >= 0.95


def test_run_crash_model_reports_errors_and_fails(built_models: Path) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v1-crash"), "--count", "20",
               "--json")
    assert out.returncode == 1
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 20 and summary["last_error"]


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    out = _cli("run", "--model", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "ArtifactMissingError" in out.stderr and "nope" in out.stderr
    assert "Traceback" not in out.stderr


def test_device_command_reads_a_fixture_tree() -> None:
    out = _cli("device", "--json", "--device-root", str(FIXTURES / "jetson_nano_r32"))
    assert out.returncode == 0, out.stderr
    profile = json.loads(out.stdout)
    assert profile["neo_target"] == "jetson_nano" and profile["jetpack"] == "4.6"
    assert profile["emulated"] is True


@pytest.mark.parametrize("bad", [["--rate", "-1"], ["--duration", "0"], ["--count", "0"],
                                 ["--check-every", "0"], ["--threads", "0"]])
def test_bad_numbers_are_config_errors(built_models: Path, bad: list[str]) -> None:
    out = _cli("run", "--model", str(built_models / "digits-v1"), *bad)
    assert out.returncode == 2
    assert "ConfigError" in out.stderr and bad[0] in out.stderr


def test_standalone_artifact_dir_without_testset(built_models: Path, tmp_path: Path) -> None:
    import shutil

    artifact = tmp_path / "neo-artifact"
    shutil.copytree(built_models / "digits-v1" / "dlr" / "linux_x86_64-x86_64", artifact)
    out = _cli("run", "--model", str(artifact), "--count", "5")
    assert out.returncode == 2 and "no labelled test set" in out.stderr
    out = _cli("run", "--model", str(artifact), "--source", "random", "--count", "50", "--json")
    assert out.returncode == 0, out.stderr
    onnx = _cli("run", "--model", str(artifact), "--backend", "onnx")
    assert onnx.returncode == 2 and "needs a model" in onnx.stderr
