"""Layout of a built model directory and the metadata files in it.

A model directory is what ``edge-agent models build`` writes, one per model
version, and what a device stores::

    digits-v1/
      model.json              ModelInfo: name, version, variant, tensor specs, metadata
                              (labels, pre/post-processing: agent.core.model_metadata)
      testset.npz             evaluation set, optional: ``x`` [N, ...] (a single-input model)
                              or one array [N, ...] per input name; ``y`` int64 [N] labels,
                              optional (a regression model has none)
      golden.npz              golden cases, optional: ``in/<input>`` and ``out/<output>``
                              arrays [N, ...]; model.json's ``golden`` says where the outputs
                              came from (GoldenInfo); without it packaging asks ONNX Runtime
      onnx/model.onnx         ONNX export of the same weights, optional
      dlr/<target>-<arch>/    one Neo-format artifact per Neo target and CPU architecture
        compiled.so  compiled.params  compiled_model.json  compiled.meta
        libdlr.so             the DLR build Neo shipped with the artifact, when it did
        artifact.info         ArtifactInfo (JSON): target, arch, emulated, JetPack line
        runner.c              stand-alone C harness (kernels in graph order), for qemu checks

An artifact directory may also be used on its own (``edge-agent run --model
dlr/ml_x86_64-x86_64``): it is recognised by its ``compiled_model.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.core.errors import ArtifactCorruptError, ArtifactMissingError
from agent.core.model_metadata import ModelMetadata, metadata_problem

MODEL_INFO = "model.json"
# Not ``*.json``: libdlr refuses a directory that holds a second JSON file besides
# the graph ("Found multiple *.json files"), which would break anyone loading an
# artifact directory with the dlr package directly.
ARTIFACT_INFO = "artifact.info"
ONNX_FILE = Path("onnx") / "model.onnx"
DLR_DIR = "dlr"
TESTSET = "testset.npz"
GOLDEN = "golden.npz"
GOLDEN_INPUT_PREFIX = "in/"
GOLDEN_OUTPUT_PREFIX = "out/"
DLR_FILES = ("compiled.so", "compiled.params", "compiled_model.json")

Dtype = Literal["float32", "float16", "int8", "uint8", "int32", "int64"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)


def as_dtype(name: str) -> Dtype:
    """Narrow a runtime's dtype string to :data:`Dtype`, or raise ArtifactCorruptError."""
    for dtype in DTYPES:
        if dtype == name:
            return dtype
    raise ArtifactCorruptError(f"unsupported tensor dtype {name!r}")


class TensorSpec(BaseModel):
    """Name, dtype and static shape of one model input or output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: Dtype
    shape: tuple[int, ...]


GoldenSource = Literal["onnx", "dlr-host", "user"]


class GoldenInfo(BaseModel):
    """Where a model directory's (or a package's) golden outputs came from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    source: GoldenSource = Field(description="onnx: ONNX Runtime on the ONNX export; dlr-host: "
                                             "the host-architecture Neo artifact through "
                                             "libdlr; user: expected outputs the user gave")
    reference: str | None = Field(default=None,
                                  description="what computed them, e.g. 'dlr/ml_c5-x86_64'")
    tolerance: float = Field(default=1e-4, gt=0, description="max |difference| a device allows")


class ModelInfo(BaseModel):
    """``model.json``: what a model directory holds."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    name: str
    version: str
    variant: str | None = Field(
        default=None, description="deliberately bad build of the version, e.g. 'slow'"
    )
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    accuracy: float | None = Field(default=None, description="top-1 accuracy on testset.npz")
    metadata: ModelMetadata | None = None
    golden: GoldenInfo | None = Field(default=None, description="what golden.npz holds")

    @model_validator(mode="after")
    def _metadata_fits(self) -> ModelInfo:
        if self.metadata is not None:
            problem = metadata_problem(self.metadata, inputs=self.inputs, outputs=self.outputs)
            if problem is not None:
                raise ValueError(problem)
        return self


class ArtifactInfo(BaseModel):
    """``artifact.info``: which device one Neo-format artifact was compiled for."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    target: str = Field(description="Neo target name, e.g. 'rasp4b', 'jetson_nano', 'ml_x86_64'")
    arch: str = Field(description="CPU architecture of compiled.so, as `uname -m` names it")
    emulated: bool = Field(
        default=False,
        description="built for the host architecture on behalf of an emulated device of `target`",
    )
    jetpack: str | None = Field(default=None, description="JetPack line, Jetson targets only")
    compiler: str = ""
    cflags: list[str] = Field(default_factory=list)
    neo_target: str | None = Field(
        default=None, description="the target as Neo named it when compiling, e.g. 'ml_c5'")
    source: str | None = Field(default=None, description="what it was imported from")


def model_label(info: ModelInfo) -> str:
    """How devices, packages and rollouts name a build: ``digits-v2``, ``digits-v1-slow``."""
    return f"{info.name}-v{info.version}" + (f"-{info.variant}" if info.variant else "")


_Model = TypeVar("_Model", bound=BaseModel)


def _read_json_model(path: Path, model: type[_Model]) -> _Model:
    try:
        raw = path.read_text()
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no such file") from err
    try:
        return model.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as err:
        raise ArtifactCorruptError(f"{path}: {err}") from err


def read_model_info(model_dir: Path) -> ModelInfo:
    return _read_json_model(model_dir / MODEL_INFO, ModelInfo)


def read_artifact_info(artifact_dir: Path) -> ArtifactInfo:
    return _read_json_model(artifact_dir / ARTIFACT_INFO, ArtifactInfo)


def artifact_dir_name(target: str, arch: str) -> str:
    return f"{target}-{arch}"


def list_artifacts(model_dir: Path) -> list[tuple[Path, ArtifactInfo]]:
    """Every DLR artifact of a model directory with its metadata, sorted by directory name."""
    root = model_dir / DLR_DIR
    if not root.is_dir():
        return []
    return [
        (child, read_artifact_info(child))
        for child in sorted(root.iterdir())
        if (child / ARTIFACT_INFO).is_file()
    ]


def is_artifact_dir(path: Path) -> bool:
    return (path / "compiled_model.json").is_file()
