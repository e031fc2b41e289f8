"""Runtime backends, one per file, registered in :data:`BACKENDS`.

Each backend module imports its native library only when a model is loaded,
so this package imports on a device that has only one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from agent.core.errors import ConfigError
from agent.device.runtime.base import Backend, allocate_inputs, check_input_buffers
from agent.device.runtime.dlr.backend import DlrBackend, DlrConfig
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

BackendConfig = Annotated[DlrConfig | OnnxConfig, Field(discriminator="type")]

BACKENDS: dict[str, type[DlrBackend] | type[OnnxBackend]] = {
    "dlr": DlrBackend,
    "onnx": OnnxBackend,
}


def load_backend(artifact_dir: Path, config: DlrConfig | OnnxConfig) -> Backend:
    """Load ``artifact_dir`` with the backend ``config.type`` names."""
    if isinstance(config, DlrConfig):
        return DlrBackend(artifact_dir=artifact_dir, config=config)
    if isinstance(config, OnnxConfig):
        return OnnxBackend(artifact_dir=artifact_dir, config=config)
    raise ConfigError(f"unknown backend config {config!r}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfig",
    "DlrBackend",
    "DlrConfig",
    "OnnxBackend",
    "OnnxConfig",
    "allocate_inputs",
    "check_input_buffers",
    "load_backend",
]
