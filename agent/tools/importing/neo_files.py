"""Which file of a Neo (or TVM ``export_library``) output is which.

A compilation output is recognised by content and suffix, not by name, so both
SageMaker Neo's names and a TVM user's own are accepted::

    role      Neo's name           TVM export_library users   rule
    graph     compiled_model.json  deploy_graph.json, ...     the one *.json that is a TVM
                                                              graph (nodes, arg_nodes, heads)
    params    compiled.params      deploy_param.params, ...   the one *.params
    kernels   compiled.so          deploy_lib.so, ...         the one *.so but libdlr.so
    meta      compiled.meta        (none)                     the one *.meta, optional
    libdlr    libdlr.so            (none)                     kept when present
    manifest  manifest             (none)                     Neo's JSON manifest, optional

Zero or two of a required role is an error naming the files found. Everything else at
the top level is ignored (and reported). :func:`claimed_target` reads the target a
``compiled.meta`` or Neo ``manifest`` states: ``Requirements.TargetDevice`` (``"ML_C5"``),
or a ``TargetPlatform`` (``{"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}``,
rendered ``linux_arm64_nvidia``), found at the top of the document or under
``Requirements``/``OutputConfig``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.runtime.dlr.library import LIBNAME
from agent.tools.importing.errors import ImportLayoutError, ImportSourceError

GRAPH, PARAMS, KERNELS, META = ("compiled_model.json", "compiled.params", "compiled.so",
                                "compiled.meta")
_MANIFEST_NAMES = ("manifest", "manifest.json")
_GRAPH_KEYS = ("nodes", "arg_nodes", "heads")
_MAX_JSON_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class NeoFiles:
    """The files of one compilation output, by role."""

    root: Path
    graph: Path
    params: Path
    kernels: Path
    meta: Path | None
    libdlr: Path | None
    manifest: Path | None
    ignored: tuple[str, ...]

    def project_names(self) -> dict[str, Path]:
        """Each file under the project's name (``compiled.so``, ...), from its source path."""
        named = {GRAPH: self.graph, PARAMS: self.params, KERNELS: self.kernels}
        if self.meta is not None:
            named[META] = self.meta
        if self.libdlr is not None:
            named[LIBNAME] = self.libdlr
        return named

    def original_name(self, project_name: str) -> str:
        """What the source called the file the project calls ``project_name``."""
        source = self.project_names().get(project_name)
        return source.name if source is not None else project_name


def find_neo_files(root: Path, source: str) -> NeoFiles:
    """Classify the regular files at the top of ``root``; ``source`` names it in errors."""
    graphs: list[Path] = []
    params: list[Path] = []
    kernels: list[Path] = []
    metas: list[Path] = []
    manifests: list[Path] = []
    libdlr: Path | None = None
    ignored: list[str] = []
    not_graphs: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except OSError as err:
        raise ImportSourceError(f"{source}: cannot list {root}: {err.strerror or err}") from err
    for path in entries:
        if not path.is_file():
            ignored.append(path.name + ("/" if path.is_dir() else ""))
            continue
        suffix = path.suffix.lower()
        if path.name == LIBNAME:
            libdlr = path
        elif suffix == ".so":
            kernels.append(path)
        elif suffix == ".params":
            params.append(path)
        elif suffix == ".meta":
            metas.append(path)
        elif suffix == ".json" or path.name in _MANIFEST_NAMES:
            doc, why = _json_object(path)
            if doc is not None and all(key in doc for key in _GRAPH_KEYS):
                graphs.append(path)
            elif path.name in _MANIFEST_NAMES and doc is not None:
                manifests.append(path)
            else:
                not_graphs.append(f"{path.name}: {why or 'no nodes, arg_nodes and heads'}")
                ignored.append(path.name)
        else:
            ignored.append(path.name)
    found = ", ".join(p.name for p in entries) or "nothing"
    detail = f" ({'; '.join(not_graphs)})" if not_graphs else ""
    graph = _one(graphs, source, "TVM graph JSON (a *.json with nodes, arg_nodes and heads)",
                 found + detail)
    return NeoFiles(
        root=root, graph=graph,
        params=_one(params, source, "*.params weights file", found),
        kernels=_one(kernels, source, f"kernels library (a *.so other than {LIBNAME})", found),
        meta=_at_most_one(metas, source, "*.meta file"),
        libdlr=libdlr,
        manifest=_at_most_one(manifests, source, "Neo manifest"),
        ignored=tuple(ignored))


def _one(candidates: list[Path], source: str, what: str, found: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ImportLayoutError(f"{source}: no {what}; found: {found}")
    raise ImportLayoutError(f"{source}: {len(candidates)} files could be the {what}: "
                            f"{', '.join(p.name for p in candidates)}; keep exactly one")


def _at_most_one(candidates: list[Path], source: str, what: str) -> Path | None:
    if len(candidates) > 1:
        raise ImportLayoutError(f"{source}: {len(candidates)} files could be the {what}: "
                                f"{', '.join(p.name for p in candidates)}; keep at most one")
    return candidates[0] if candidates else None


def _json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The file's JSON object, or None and why not."""
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None, f"over {_MAX_JSON_BYTES} bytes"
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f"not JSON ({err})"
    if not isinstance(doc, dict):
        return None, f"a JSON {type(doc).__name__}, not an object"
    return doc, None


def claimed_target(path: Path, source: str) -> str | None:
    """The target ``path`` (a compiled.meta or Neo manifest) states, or None."""
    doc, why = _json_object(path)
    if doc is None:
        raise ImportLayoutError(f"{source}: {path.name}: {why}")
    for scope in (doc, doc.get("Requirements"), doc.get("OutputConfig")):
        if not isinstance(scope, dict):
            continue
        device = scope.get("TargetDevice")
        if isinstance(device, str) and device.strip():
            return device.strip()
        platform = scope.get("TargetPlatform")
        if isinstance(platform, dict):
            return _platform_name(platform, path, source)
    return None


def _platform_name(platform: dict[str, Any], path: Path, source: str) -> str:
    os_name, arch = platform.get("Os"), platform.get("Arch")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise ImportLayoutError(f"{source}: {path.name}: TargetPlatform needs Os and Arch "
                                f"strings, got {platform}")
    name = f"{os_name}_{arch}".lower()
    accelerator = platform.get("Accelerator")
    if isinstance(accelerator, str) and accelerator:
        name += f"_{accelerator.lower()}"
    return name
