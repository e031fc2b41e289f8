"""Shared pieces of the ``models import`` tests: a request builder, a snapshot of a
directory (to assert that a refused import wrote nothing) and Neo outputs on disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foreign_neo import neo_output_files

from agent.tools.importing.golden import GoldenOptions
from agent.tools.importing.importer import ImportRequest, import_model
from agent.tools.importing.metadata_file import MetadataOptions
from agent.tools.importing.report import ImportResult


def request(sources: Sequence[str | Path], out: Path, *, name: str | None = "fusion",
            metadata: dict[str, Any] | None = None, golden: dict[str, Any] | None = None,
            **kwargs: Any) -> ImportRequest:
    """An ImportRequest with the model name set and metadata/golden options as dicts."""
    return ImportRequest(sources=tuple(str(s) for s in sources), out=out,
                         metadata=MetadataOptions(name=name, **(metadata or {})),
                         golden=GoldenOptions(**(golden or {})), **kwargs)


def run_import(sources: Sequence[str | Path], out: Path, **kwargs: Any) -> ImportResult:
    return import_model(request(sources, out, **kwargs))


def snapshot(directory: Path) -> list[str]:
    """Every path under ``directory`` (hidden ones too), relative and sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def write_dir(dest: Path, files: dict[str, bytes]) -> Path:
    """``files`` written into the new directory ``dest``."""
    dest.mkdir(parents=True)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    return dest


def tvm_export_files(model: str = "fusion", *, arch: str = "x86_64") -> dict[str, bytes]:
    """A model as TVM's ``export_library`` users save it: deploy_lib.so, deploy_graph.json,
    deploy_param.params, and no compiled.meta."""
    files = neo_output_files(model, arch=arch, meta=False)
    return {"deploy_lib.so": files["compiled.so"],
            "deploy_graph.json": files["compiled_model.json"],
            "deploy_param.params": files["compiled.params"]}
