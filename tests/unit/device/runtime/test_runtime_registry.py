"""The runtime registry, the settings union derived from it, and the agent's ``backend``
setting that holds one member of that union."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from agent.core.errors import ArtifactMissingError, ConfigError
from agent.device.app.config import AgentConfig, load_config
from agent.device.runtime import (
    BACKENDS,
    BackendConfig,
    DlrBackend,
    DlrConfig,
    OnnxBackend,
    OnnxConfig,
    load_backend,
)


def test_registry_maps_each_type_to_its_settings_and_backend() -> None:
    assert {name: (r.config, r.backend) for name, r in BACKENDS.items()} == {
        "dlr": (DlrConfig, DlrBackend), "onnx": (OnnxConfig, OnnxBackend)}
    for name, runtime in BACKENDS.items():
        assert runtime.name == name == runtime.config().type


def test_union_is_derived_from_the_registry_and_held_by_the_agent_setting() -> None:
    union, discriminator = get_args(BackendConfig)
    assert get_args(union) == tuple(r.config for r in BACKENDS.values())
    assert discriminator.discriminator == "type"
    assert AgentConfig.model_fields["backend"].discriminator == "type"


def _config(**settings: Any) -> AgentConfig:
    return load_config({"thingName": "t", **settings})


def test_a_bare_name_is_that_runtimes_default_settings() -> None:
    assert _config().backend == DlrConfig()
    assert _config(backend="dlr").backend == DlrConfig()
    assert _config(backend="onnx").backend == OnnxConfig()


def test_settings_are_given_with_their_type_in_either_key_style() -> None:
    assert _config(backend={"type": "dlr", "numThreads": 2}).backend == DlrConfig(num_threads=2)
    assert _config(backend={"type": "onnx", "intra_op_threads": 3}).backend == \
        OnnxConfig(intra_op_threads=3)
    # Greengrass stores integers as floats
    assert _config(backend={"type": "dlr", "numThreads": 2.0}).backend == DlrConfig(num_threads=2)


@pytest.mark.parametrize(("value", "fault"), [
    ("tpu", "backend: Input tag 'tpu'"),
    ({"numThreads": 2}, "backend: Unable to extract tag"),
    ({"type": "onnx", "numThreads": 2}, "backend.onnx.numThreads: Extra inputs"),
    (3, "backend: "),
])
def test_a_wrong_backend_is_a_config_error_naming_it(value: object, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault.replace(".", r"\.")):
        _config(backend=value)


def _dumped(config: AgentConfig) -> Any:
    return config.model_dump(by_alias=True, mode="json", exclude_none=True)["backend"]


def test_default_settings_are_written_back_as_the_bare_name() -> None:
    assert _dumped(_config()) == "dlr"
    assert _dumped(_config(backend="onnx")) == "onnx"
    tuned = _config(backend={"type": "dlr", "numThreads": 2})
    assert _dumped(tuned) == {"type": "dlr", "library": "installed", "numThreads": 2,
                              "device": "cpu"}
    assert load_config({"thingName": "t", "backend": _dumped(tuned)}).backend == tuned.backend


def test_merged_keeps_or_replaces_the_backend() -> None:
    tuned = _config(backend={"type": "dlr", "numThreads": 2})
    assert tuned.merged({"rateHz": 5}).backend == DlrConfig(num_threads=2)
    assert tuned.merged({"backend": "onnx"}).backend == OnnxConfig()
    assert tuned.merged({"backend": "dlr"}).backend == DlrConfig()


def test_load_backend_builds_the_registered_backend(tmp_path: Path) -> None:
    # Both backends look for their files before touching a native library.
    with pytest.raises(ArtifactMissingError, match="no ONNX model"):
        load_backend(tmp_path, OnnxConfig())
    with pytest.raises(ArtifactMissingError):
        load_backend(tmp_path, DlrConfig())


def test_load_backend_refuses_settings_of_no_runtime(tmp_path: Path) -> None:
    class Other(BaseModel):
        type: str = "dlr"

    with pytest.raises(ConfigError, match="unknown backend config"):
        load_backend(tmp_path, Other())  # type: ignore[arg-type]


@pytest.mark.parametrize(("module", "not_imported"), [
    ("agent.device.platform.resolve", "agent.device.runtime"),
    ("agent.tools.greengrass.component_recipes", "agent.tools.greengrass.component"),
])
def test_module_does_not_import(module: str, not_imported: str) -> None:
    code = (f"import sys, {module}; "
            f"sys.exit(sorted(m for m in sys.modules if m == {not_imported!r} "
            f"or m.startswith({not_imported + '.'!r})) or 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
