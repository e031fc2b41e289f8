"""The device install: the default requirements carry only what a device needs, the install
step installs nothing more, and a command that needs an extra says which one. The slow
variant builds the wheel and installs it into a fresh venv (scripts/check-device-install)."""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from paths import REPO_ROOT

from agent.cli import extras
from agent.cli.main import build_parser, leaf_commands, main
from agent.tools.brokers import BrokerError

ROOT = REPO_ROOT
DIST = "edge-inference-agent"
DEVICE_SET = {"numpy", "pydantic", "typing-extensions", "dlr", "onnxruntime", "awsiotsdk",
              "awscrt", "cryptography", "psutil", "pyyaml"}
NOT_ON_A_DEVICE = {"amqtt", "matplotlib", "scikit-learn", "onnx", "threadpoolctl", "paho-mqtt",
                   "pytest", "ruff", "mypy", "import-linter", "wheel", "setuptools", "pillow"}


def _requirements() -> list[Requirement]:
    return [Requirement(line) for line in importlib.metadata.requires(DIST) or []]


def _extra_of(req: Requirement) -> str | None:
    if req.marker is None:
        return None
    for extra in importlib.metadata.metadata(DIST).get_all("Provides-Extra") or []:
        if "extra" in str(req.marker) and req.marker.evaluate({"extra": extra}):
            return extra
    return None


def _by_extra() -> dict[str | None, set[str]]:
    sets: dict[str | None, set[str]] = {}
    for req in _requirements():
        sets.setdefault(_extra_of(req), set()).add(canonicalize_name(req.name))
    return sets


def test_the_default_requirements_are_the_device_set() -> None:
    default = _by_extra()[None]
    assert default == DEVICE_SET, default ^ DEVICE_SET
    assert not default & NOT_ON_A_DEVICE


def test_the_extras_carry_the_rest() -> None:
    sets = _by_extra()
    assert "matplotlib" in sets["controller"]
    assert "amqtt" in sets["tools"]
    assert {"scikit-learn", "onnx"} <= sets["models"]
    assert sets["images"] == {"pillow"}
    assert {"import-linter", "pytest", "ruff", "mypy"} <= sets["dev"]
    dev_self = [r for r in _requirements() if canonicalize_name(r.name) == DIST]
    assert [set(r.extras) for r in dev_self] == [{"controller", "tools", "models", "images",
                                                  "video"}]


def test_the_cli_knows_every_extra_and_names_real_commands() -> None:
    provided = set(importlib.metadata.metadata(DIST).get_all("Provides-Extra") or [])
    assert set(extras.EXTRA_MODULES) <= provided
    assert set(extras.COMMAND_EXTRAS.values()) <= set(extras.EXTRA_MODULES)
    commands = [words for words, _ in leaf_commands(build_parser())]
    for prefix in extras.COMMAND_EXTRAS:
        assert any(words[:len(prefix)] == prefix for words in commands), prefix


def test_a_command_that_needs_a_missing_extra_names_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(extras.EXTRA_MODULES, "tools", ("edge_agent_no_such_module",))
    assert main(["demo", "fleet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == ("edge-agent demo fleet needs the \"tools\" extra: "
                                    "pip install 'edge-inference-agent[tools]'")
    assert captured.out == ""


def test_an_error_from_a_missing_module_of_an_extra_names_the_extra(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def embedded_broker(_args: object) -> int:  # what EmbeddedBroker.start raises without amqtt
        try:
            raise ModuleNotFoundError("No module named 'amqtt'", name="amqtt")
        except ImportError as err:
            raise BrokerError("the embedded broker needs amqtt") from err

    monkeypatch.setattr("agent.cli.main.cmd_device", embedded_broker)
    assert main(["device"]) == 2
    assert capsys.readouterr().err.strip() == (
        "edge-agent device needs the \"tools\" extra: pip install 'edge-inference-agent[tools]'")


def test_other_import_errors_are_not_blamed_on_an_extra() -> None:
    err = ModuleNotFoundError("No module named 'numpy'", name="numpy")
    assert extras.missing_extra(("run",), err) is None
    assert extras.extra_of_module("matplotlib.pyplot") == "controller"
    assert extras.extra_of_module("sklearn.datasets") == "models"


def test_the_install_step_installs_the_wheel_without_extras() -> None:
    script = (ROOT / "recipes" / "install-agent.sh").read_text()
    installs = [line.strip() for line in script.splitlines()
                if "pip install" in line and not line.lstrip().startswith("#")]
    wheel_installs = [line for line in installs if "$wheel" in line]
    assert wheel_installs == ['"$venv/bin/python" -m pip install --quiet "$wheel"'], installs
    assert not any("[" in line for line in installs), installs


@pytest.mark.slow
def test_the_wheel_installs_and_runs_as_a_device_install() -> None:
    result = subprocess.run([str(ROOT / "scripts" / "check-device-install")],
                            capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "check-device-install: all checks passed" in output
