"""``edge-agent`` as a user runs it: real subprocesses, real output."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.tools.boards import BOARDS_DIR

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
    out = _cli("run", "--model", str(artifact), "--count", "5", "--json")
    assert out.returncode == 0 and "no test set" in out.stderr, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["source"] == "random"
    out = _cli("run", "--model", str(artifact), "--source", "testset", "--count", "5")
    assert out.returncode == 2 and "use --source random" in out.stderr, out.stderr
    out = _cli("run", "--model", str(artifact), "--source", "random", "--count", "50", "--json")
    assert out.returncode == 0, out.stderr
    onnx = _cli("run", "--model", str(artifact), "--backend", "onnx")
    assert onnx.returncode == 2 and "needs a model" in onnx.stderr


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command under ``parser``, walked here independently of the CLI's own."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _leaves(child, (*path, name))
    return found or [" ".join(path)]


def test_help_lists_every_command_and_sub_command() -> None:
    from agent.cli import main as cli

    leaves = _leaves(cli.build_parser())
    assert {"package component", "demo fleet", "bench swap", "fleet devices", "keys generate",
            "rollout start", "serve", "run"} <= set(leaves)
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("commands (edge-agent COMMAND --help for its options):", 1)[1]
    rows = [line.split("  ", 2)[1] for line in listed.splitlines()
            if line.startswith("  ") and not line.startswith("   ")]
    assert rows == leaves  # each once, in the parser's order, and nothing else
    # The module docstring names every top-level command (the rest it leaves to --help).
    documented = set(re.findall(r"^    ([\w, -]+?)\s{2,}", cli.__doc__ or "", re.M))
    named = {word for line in documented for word in re.split(r",\s*", line)}
    assert {leaf.split()[0] for leaf in leaves} <= named


def test_version() -> None:
    from agent import __version__

    out = _cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"edge-agent {__version__}\n"


def test_keys_generate_says_where_each_form_goes(tmp_path: Path) -> None:
    out = _cli("keys", "generate", "--out", str(tmp_path / "keys"), "--key-id", "ctl-1")
    assert out.returncode == 0, out.stderr
    pem, b64 = tmp_path / "keys" / "ctl-1.pub", None
    for line in out.stdout.splitlines():
        if line.startswith("public key, base64"):
            b64 = line.split()[-1]
    assert b64 is not None
    assert f"--signing-key {tmp_path / 'keys' / 'ctl-1.key'} --key-id ctl-1" in out.stdout
    assert f"--trusted-key ctl-1={pem}" in out.stdout
    assert json.dumps({"trustedKeys": {"ctl-1": b64}}) in out.stdout
    assert f"EDGE_TRUSTED_KEYS={json.dumps({'ctl-1': b64})}" in out.stdout

    out = _cli("keys", "generate", "--out", str(tmp_path / "keys"), "--key-id", "ctl-2", "--json")
    assert out.returncode == 0, out.stderr
    keys = json.loads(out.stdout)
    assert keys["public_pem"] == Path(keys["public"]).read_text()
    assert keys["trusted_key_argument"] == f"ctl-2={keys['public']}"
    assert keys["trusted_keys"] == {"ctl-2": keys["public_b64"]}
    assert keys["signing_arguments"] == ["--signing-key", keys["private"], "--key-id", "ctl-2"]
    # What it prints is what the entry points take.
    from agent.device.app.config import load_config
    from agent.wire.keys import trusted_public_key

    config = load_config({"thingName": "t", "trustedKeys": keys["trusted_keys"]})
    assert config.trusted_keys == keys["trusted_keys"]
    key_id, _, value = keys["trusted_key_argument"].partition("=")
    assert trusted_public_key(key_id, value) == trusted_public_key(key_id, keys["public_pem"])


def test_signing_commands_take_signing_key_not_key(tmp_path: Path) -> None:
    for command in (["package", "model", str(tmp_path), "--all", "--version", "1"],
                    ["package", "component"]):
        out = _cli(*command, "--key", "k.key", "--key-id", "k", "--out", str(tmp_path))
        assert out.returncode == 2 and "--signing-key" in out.stderr, out.stderr
