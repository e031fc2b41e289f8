"""``edge-agent models import``: from compilation outputs to a model directory, atomically.

:func:`import_model` opens every source (:mod:`~agent.tools.importing.sources`), finds its
files (:mod:`~agent.tools.importing.neo_files`), settles its target
(:mod:`~agent.tools.importing.targets`) and assembles it as ``dlr/<target>-<arch>/`` with the
project's file names and an ``artifact.info`` (``neo_target``: the target as Neo spelt it;
``source``: the file it came from), or ``onnx/model.onnx`` for an ONNX source. Then the
tensors are read and compared (:mod:`~agent.tools.importing.specs`), ``--emulate`` copies
of the host artifact are added, the metadata is checked against the tensors, the test set
is checked, and golden vectors are made (:mod:`~agent.tools.importing.golden`).

All of it happens in a temp directory beside ``--out`` (inside its nearest existing
ancestor), and the finished model directory is renamed into place: a failed import
writes nothing, and an existing ``--out`` is replaced only with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agent.core.errors import ArtifactError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    DLR_DIR,
    GOLDEN,
    MODEL_INFO,
    ONNX_FILE,
    TESTSET,
    ArtifactInfo,
    ModelInfo,
    artifact_dir_name,
)
from agent.core.model_metadata import metadata_problem
from agent.device.platform.elf import elf_arch, host_arch
from agent.tools.importing.arrays import write_npz
from agent.tools.importing.errors import (
    ImportLayoutError,
    ImportMetadataError,
    ImportOutputError,
    ImportSourceError,
    ImportTargetError,
)
from agent.tools.importing.golden import (
    GoldenOptions,
    Reference,
    check_options,
    make_golden,
    write_golden,
)
from agent.tools.importing.metadata_file import MetadataOptions, resolve_metadata
from agent.tools.importing.neo_files import NeoFiles, claimed_target, find_neo_files
from agent.tools.importing.report import ImportedArtifact, ImportResult
from agent.tools.importing.sources import OpenedSource, SourceSpec, open_source, parse_source
from agent.tools.importing.specs import Specs, artifact_specs, check_same_specs, onnx_specs
from agent.tools.importing.targets import (
    Claim,
    ResolvedTarget,
    check_jetpack,
    emulation_target,
    parse_named,
    resolve_target,
)
from agent.tools.importing.testset import read_testset


@dataclass(frozen=True, kw_only=True)
class ImportRequest:
    """Everything ``models import`` was asked to do."""

    sources: tuple[str, ...]  # PATH or TARGET=PATH each
    out: Path
    target: str | None = None  # for sources that state none
    jetpack: str | None = None
    emulate: tuple[str, ...] = ()
    metadata: MetadataOptions = field(default_factory=MetadataOptions)
    golden: GoldenOptions = field(default_factory=GoldenOptions)
    testset: Path | None = None
    force: bool = False


@dataclass
class _Assembly:
    """What the import has put together so far, in the temp model directory."""

    model_dir: Path
    artifacts: list[ImportedArtifact] = field(default_factory=list)
    specs: list[tuple[str, Specs]] = field(default_factory=list)  # (source, specs)
    onnx_source: str | None = None

    def add_specs(self, source: str, specs: Specs) -> None:
        if self.specs:
            check_same_specs(self.specs[0][0], self.specs[0][1], source, specs)
        self.specs.append((source, specs))

    def claim_dir(self, dir_name: str, source: str) -> Path:
        for artifact in self.artifacts:
            if artifact.path == f"{DLR_DIR}/{dir_name}":
                raise ImportTargetError(f"{artifact.info.source or 'an --emulate copy'} and "
                                        f"{source} are both {dir_name}: import one artifact "
                                        "per target and architecture")
        return self.model_dir / DLR_DIR / dir_name


def import_model(request: ImportRequest) -> ImportResult:
    """Import ``request.sources`` into the model directory ``request.out``."""
    resolved = resolve_metadata(request.metadata)
    check_options(request.golden)
    jetpack = check_jetpack(request.jetpack)
    if request.target is not None:
        parse_named(request.target, f"--target {request.target!r}")
    for name in request.emulate:
        parse_named(name, f"--emulate {name!r}")
    specs = [parse_source(text) for text in request.sources]
    if not specs:
        raise ImportSourceError("no source given: name a Neo output (directory, .tar.gz, "
                                ".zip) or an .onnx file")
    out = request.out
    _check_out(out, force=request.force)
    anchor = _existing_ancestor(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=anchor))
    except OSError as err:
        raise ImportOutputError(f"{anchor}: cannot write the import beside --out "
                                f"{out}: {err.strerror or err}") from err
    try:
        work, model_dir = tmp / "work", tmp / "model"
        work.mkdir()
        model_dir.mkdir()
        assembly = _Assembly(model_dir)
        for spec in specs:
            _add_source(assembly, open_source(spec, work), request, jetpack)
        _add_emulated(assembly, request.emulate, jetpack)
        if jetpack is not None and not any(a.info.jetpack for a in assembly.artifacts):
            raise ImportTargetError(f"--jetpack {request.jetpack}: no artifact is for a "
                                    "Jetson target")
        inputs, outputs = assembly.specs[0][1]
        metadata = resolved.metadata
        if metadata is not None:
            problem = metadata_problem(metadata, inputs=inputs, outputs=outputs)
            if problem is not None:
                raise ImportMetadataError(f"{resolved.origin_of(problem)}: {problem}")
        classes = len(metadata.labels) if metadata and metadata.labels else None
        testset = (read_testset(request.testset, inputs, classes=classes)
                   if request.testset is not None else None)
        golden = make_golden(request.golden, inputs=inputs, outputs=outputs,
                             host=_host_reference(assembly),
                             onnx_source=(Reference("onnx", model_dir / ONNX_FILE,
                                                    ONNX_FILE.as_posix())
                                          if assembly.onnx_source else None),
                             testset=testset, work_dir=work)
        info = ModelInfo(name=resolved.name, version=str(resolved.version),
                         inputs=list(inputs), outputs=list(outputs), metadata=metadata,
                         golden=golden.info)
        write_golden(model_dir / GOLDEN, golden)
        if testset is not None:
            write_npz(model_dir / TESTSET, testset.arrays())
        _write_json(model_dir / MODEL_INFO, info.model_dump(mode="json", exclude_none=True))
        _move_into_place(model_dir, out, tmp, force=request.force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ImportResult(model_dir=out, info=info, artifacts=tuple(assembly.artifacts),
                        onnx_source=assembly.onnx_source, golden_cases=golden.count,
                        golden_checked_by=golden.checked_by,
                        testset_cases=testset.count if testset is not None else None,
                        testset_labelled=testset is not None and testset.labels is not None)


def _add_source(assembly: _Assembly, opened: OpenedSource, request: ImportRequest,
                jetpack: str | None) -> None:
    source = opened.spec.display
    if opened.kind == "onnx":
        if assembly.onnx_source is not None:
            raise ImportSourceError(f"{assembly.onnx_source} and {source} are both ONNX "
                                    "models: a model directory holds one")
        if opened.spec.target is not None:
            raise ImportTargetError(f"{opened.spec.target}={source}: an ONNX model is not "
                                    "compiled for a target; drop the prefix")
        dest = assembly.model_dir / ONNX_FILE
        dest.parent.mkdir(parents=True)
        _copy(opened.root, dest, source)
        assembly.add_specs(source, onnx_specs(dest, source))
        assembly.onnx_source = source
        return
    files = find_neo_files(opened.root, source)
    target = resolve_target(source=source, claims=_claims(opened.spec, files, request),
                            elf=_elf(files, source), jetpack=jetpack)
    dir_name = artifact_dir_name(target.target.name, target.arch)
    dest = assembly.claim_dir(dir_name, source)
    dest.mkdir(parents=True)
    for project_name, path in files.project_names().items():
        _copy(path, dest / project_name, source)
    info = _artifact_info(target, source=source, emulated=False)
    _write_json(dest / ARTIFACT_INFO, info.model_dump(mode="json"))
    assembly.add_specs(source, artifact_specs(dest, files, source))
    assembly.artifacts.append(ImportedArtifact(
        path=f"{DLR_DIR}/{dir_name}", info=info, libdlr=files.libdlr is not None,
        ignored=files.ignored, renamed=_renamed(files)))


def _claims(spec: SourceSpec, files: NeoFiles, request: ImportRequest) -> list[Claim]:
    claims = []
    if spec.target is not None:
        claims.append(Claim(f"{spec.target}= prefix", spec.target))
    elif request.target is not None:
        claims.append(Claim("--target", request.target))
    for path, where in ((files.meta, "Requirements.TargetDevice"),
                        (files.manifest, "target")):
        if path is not None:
            stated = claimed_target(path, spec.display)
            if stated is not None:
                claims.append(Claim(f"{path.name} {where}", stated))
    return claims


def _elf(files: NeoFiles, source: str) -> list[tuple[str, str]]:
    pairs = []
    for path in (files.kernels, files.libdlr):
        if path is None:
            continue
        try:
            pairs.append((path.name, elf_arch(path)))
        except ArtifactError as err:  # not an ELF file
            raise ImportLayoutError(f"{source}: {path.name}: {err}") from err
    return pairs


def _add_emulated(assembly: _Assembly, names: tuple[str, ...], jetpack: str | None) -> None:
    if not names:
        return
    host = host_arch()
    native = [a for a in assembly.artifacts if a.info.arch == host and not a.info.emulated]
    if not native:
        arches = ", ".join(f"{a.info.source} is {a.info.arch}" for a in assembly.artifacts)
        raise ImportTargetError(f"--emulate {names[0]}: needs an artifact compiled for this "
                                f"machine ({host}) among the sources ({arches or 'none'})")
    base = min(native, key=lambda a: not a.info.target.startswith("linux_"))
    base_dir = assembly.model_dir / base.path
    for name in names:
        target = emulation_target(name, host, jetpack)
        dir_name = artifact_dir_name(target.target.name, host)
        dest = assembly.claim_dir(dir_name, f"--emulate {name}")
        dest.mkdir(parents=True)
        for child in sorted(base_dir.iterdir()):
            if child.name != ARTIFACT_INFO:
                shutil.copyfile(child, dest / child.name)
        info = _artifact_info(target, source=base.info.source, emulated=True,
                              neo_target=base.info.neo_target)
        _write_json(dest / ARTIFACT_INFO, info.model_dump(mode="json"))
        assembly.artifacts.append(ImportedArtifact(
            path=f"{DLR_DIR}/{dir_name}", info=info, libdlr=base.libdlr, ignored=(),
            renamed={}))


def _artifact_info(target: ResolvedTarget, *, source: str | None, emulated: bool,
                   neo_target: str | None = None) -> ArtifactInfo:
    return ArtifactInfo(target=target.target.name, arch=target.arch, emulated=emulated,
                        jetpack=target.jetpack, neo_target=neo_target or target.neo_target,
                        source=source)


def _host_reference(assembly: _Assembly) -> Reference | None:
    host = host_arch()
    native = [a for a in assembly.artifacts if a.info.arch == host and not a.info.emulated]
    if not native:
        return None
    chosen = min(native, key=lambda a: not a.info.target.startswith("linux_"))
    return Reference("dlr-host", assembly.model_dir / chosen.path, chosen.path)


def _renamed(files: NeoFiles) -> dict[str, str]:
    return {path.name: name for name, path in files.project_names().items()
            if path.name != name}


def _copy(source_path: Path, dest: Path, source: str) -> None:
    try:
        shutil.copyfile(source_path, dest)
        dest.chmod(0o644)
    except OSError as err:
        raise ImportSourceError(f"{source}: cannot read {source_path.name}: "
                                f"{err.strerror or err}") from err


def _write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _check_out(out: Path, *, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ImportOutputError(f"--out {out}: exists and is not a directory")
    if out.exists() and not force:
        raise ImportOutputError(f"--out {out}: already exists (give --force to replace it)")


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.is_dir():
        if current.exists() or current.parent == current:
            raise ImportOutputError(f"--out: {current} is not a directory")
        current = current.parent
    return current


def _move_into_place(model_dir: Path, out: Path, tmp: Path, *, force: bool) -> None:
    _check_out(out, force=force)
    try:
        model_dir.chmod(0o755)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            old = tmp / "replaced"
            os.rename(out, old)
            try:
                os.rename(model_dir, out)
            except OSError:
                os.rename(old, out)
                raise
        else:
            os.rename(model_dir, out)
    except OSError as err:
        raise ImportOutputError(f"--out {out}: cannot move the model into place: "
                                f"{err.strerror or err}") from err
