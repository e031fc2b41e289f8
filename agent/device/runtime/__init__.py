"""Runtime backends: one module per runtime, holding its settings and its backend class.

A runtime's settings are a pydantic model whose ``type`` field names the runtime
(``Literal["dlr"]``, ``Literal["onnx"]``). :data:`BACKENDS` maps each ``type`` to its
:class:`Runtime` (settings class, backend class); :data:`BackendConfig`, the union of
every runtime's settings discriminated by ``type``, is derived from it and is what the
agent's ``backend`` setting holds (:class:`agent.device.app.config.AgentConfig`).
:func:`load_backend` builds the backend a settings object names.

Each backend module imports its native library only when a model is loaded,
so this package imports on a device that has only one of them.

Modules and their public names:

- ``base``: ``Backend``, ``check_input_buffers``, ``check_output_buffers``,
  ``allocate_inputs``
- ``dlr``/: ``DlrBackend``, ``DlrConfig``
- ``onnx``: ``OnnxConfig``, ``OnnxBackend``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar, Union

from pydantic import BaseModel, Field

from agent.core.errors import ConfigError
from agent.device.runtime.base import (
    Backend,
    allocate_inputs,
    check_input_buffers,
    check_output_buffers,
)
from agent.device.runtime.dlr import DlrBackend, DlrConfig
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

C = TypeVar("C", bound=BaseModel)
C_contra = TypeVar("C_contra", bound=BaseModel, contravariant=True)


class BackendClass(Protocol[C_contra]):
    """How every backend class is constructed: an artifact and that runtime's settings."""

    def __call__(self, *, artifact_dir: Path, config: C_contra) -> Backend: ...


@dataclass(frozen=True)
class Runtime(Generic[C]):
    """One runtime: its settings class and the backend class those settings configure."""

    config: type[C]
    backend: BackendClass[C]

    @property
    def name(self) -> str:
        """The runtime's ``type``, as its settings class declares it."""
        name: str = self.config.model_fields["type"].default
        return name


BACKENDS: Mapping[str, Runtime[Any]] = MappingProxyType({
    runtime.name: runtime for runtime in (
        Runtime(DlrConfig, DlrBackend),
        Runtime(OnnxConfig, OnnxBackend),
    )})

if TYPE_CHECKING:  # the union derived below, spelled out for type checkers (same members)
    BackendConfig = DlrConfig | OnnxConfig
else:
    BackendConfig = Annotated[Union[tuple(r.config for r in BACKENDS.values())],  # noqa: UP007
                              Field(discriminator="type")]


def load_backend(artifact_dir: Path, config: BackendConfig) -> Backend:
    """Load ``artifact_dir`` with the backend ``config.type`` names, configured by ``config``."""
    runtime = BACKENDS.get(getattr(config, "type", ""))
    if runtime is None or not isinstance(config, runtime.config):
        raise ConfigError(f"unknown backend config {config!r}")
    return runtime.backend(artifact_dir=artifact_dir, config=config)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendClass",
    "BackendConfig",
    "DlrBackend",
    "DlrConfig",
    "OnnxBackend",
    "OnnxConfig",
    "Runtime",
    "allocate_inputs",
    "check_input_buffers",
    "check_output_buffers",
    "load_backend",
]
