"""What an import produced, for people (:meth:`ImportResult.summary`) and programs
(:meth:`ImportResult.to_dict`, ``models import --json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.model_layout import ONNX_FILE, ArtifactInfo, ModelInfo, model_label
from agent.tools.importing.specs import describe


@dataclass(frozen=True)
class ImportedArtifact:
    """One ``dlr/<target>-<arch>/`` directory of the imported model."""

    path: str  # relative to the model directory, e.g. "dlr/rasp4b-aarch64"
    info: ArtifactInfo
    libdlr: bool  # the source shipped its own libdlr.so, kept beside compiled.so
    ignored: tuple[str, ...]  # files of the source that are no part of the artifact
    renamed: dict[str, str]  # source file name -> the project's name, where they differ


@dataclass(frozen=True)
class ImportResult:
    model_dir: Path
    info: ModelInfo
    artifacts: tuple[ImportedArtifact, ...]
    onnx_source: str | None  # the source written as onnx/model.onnx
    golden_cases: int
    golden_checked_by: str | None  # what reproduced user-given expected outputs
    testset_cases: int | None
    testset_labelled: bool

    def to_dict(self) -> dict[str, Any]:
        golden = self.info.golden
        return {
            "model_dir": str(self.model_dir),
            "name": self.info.name,
            "version": self.info.version,
            "label": model_label(self.info),
            "inputs": [s.model_dump(mode="json") for s in self.info.inputs],
            "outputs": [s.model_dump(mode="json") for s in self.info.outputs],
            "artifacts": [{"path": a.path, **a.info.model_dump(mode="json",
                                                               exclude_defaults=True),
                           "emulated": a.info.emulated, "libdlr": a.libdlr,
                           "ignored": list(a.ignored), "renamed": a.renamed}
                          for a in self.artifacts],
            "onnx": ONNX_FILE.as_posix() if self.onnx_source else None,
            "onnx_source": self.onnx_source,
            "golden": {**(golden.model_dump(mode="json") if golden else {}),
                       "cases": self.golden_cases, "checked_by": self.golden_checked_by},
            "testset": (None if self.testset_cases is None else
                        {"cases": self.testset_cases, "labelled": self.testset_labelled}),
            "metadata": (self.info.metadata.model_dump(mode="json", exclude_none=True)
                         if self.info.metadata else None),
        }

    def summary(self) -> str:
        info = self.info
        lines = [f"imported {info.name} v{info.version} (label {model_label(info)}) into "
                 f"{self.model_dir}",
                 f"  inputs:  {describe(info.inputs)}",
                 f"  outputs: {describe(info.outputs)}"]
        width = max((len(a.path) for a in self.artifacts), default=0)
        for artifact in self.artifacts:
            a = artifact.info
            notes = [f"target {a.target}", a.arch]
            if a.emulated:
                notes.append("emulated")
            if a.jetpack:
                notes.append(f"JetPack {a.jetpack}")
            if a.neo_target:
                notes.append(f"Neo {a.neo_target}")
            if artifact.libdlr:
                notes.append("ships libdlr.so")
            if a.source:
                notes.append(f"from {a.source}")
            lines.append(f"  {artifact.path:<{width}}  {', '.join(notes)}")
            if artifact.ignored:
                lines.append(f"  {'':<{width}}  ignored: {', '.join(artifact.ignored)}")
        if self.onnx_source:
            lines.append(f"  {ONNX_FILE.as_posix()}  from {self.onnx_source}")
        golden = info.golden
        if golden is not None:
            by = f" ({golden.reference})" if golden.reference else ""
            checked = (f", reproduced by {self.golden_checked_by}" if self.golden_checked_by
                       else ", not checked (no host artifact or ONNX model)"
                       if golden.source == "user" else "")
            lines.append(f"  golden:  {self.golden_cases} case(s) from {golden.source}{by}, "
                         f"tolerance {golden.tolerance:g}{checked}")
        if self.testset_cases is not None:
            labelled = "labelled" if self.testset_labelled else "no labels"
            lines.append(f"  testset: {self.testset_cases} case(s), {labelled}")
        meta = info.metadata
        if meta is not None:
            parts = []
            if meta.labels:
                parts.append(f"{len(meta.labels)} labels")
            if meta.preprocess:
                parts.append(f"preprocess {meta.preprocess.layout}")
            if meta.postprocess:
                parts.append(f"postprocess top-{meta.postprocess.top_k}"
                             + (" softmax" if meta.postprocess.softmax else ""))
            if meta.description:
                parts.append(repr(meta.description))
            lines.append(f"  metadata: {', '.join(parts) or 'none'}")
        return "\n".join(lines)
