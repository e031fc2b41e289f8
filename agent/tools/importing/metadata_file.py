"""A model's name, version and metadata, from flags and an optional small YAML file.

The file (``--metadata FILE.yaml``) holds the same keys as the flags, flat::

    name: pallets              # the model's name (required here or as --name)
    version: 3                 # an integer, default 1
    description: pallet detector, 2024-06 retrain
    labels: synset.txt         # a labels file (relative to the YAML file), or a list
    preprocess: {layout: NHWC, size: [96, 96], channel_order: RGB, scale: 0.0039215686,
                 mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], dtype: float32,
                 input: image}
    postprocess: {output: scores, softmax: true, top_k: 3}

A flag overrides the file's key (``--layout`` its ``preprocess.layout``, ...). A labels
file holds one label per line; blank lines are ignored. Errors name the flag or the file
and the field (``meta.yaml: preprocess.layout: Input should be 'NCHW' or 'NHWC'``).

The name is required (a Neo output's file name, ``model-ml_c5.tar.gz``, names the job's
target, not the model): it becomes the model's label, its package names and its
Greengrass component, so it is letters, digits, ``_``, ``-`` and ``.``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.model_metadata import ModelMetadata
from agent.tools.importing.errors import ImportMetadataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_MAX_LABELS_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class MetadataOptions:
    """The metadata flags of ``models import``, as given (None: not given)."""

    file: Path | None = None
    name: str | None = None
    version: int | None = None
    description: str | None = None
    labels: Path | None = None
    layout: str | None = None
    size: str | None = None  # HxW
    mean: str | None = None  # a,b,c
    std: str | None = None
    scale: float | None = None
    channel_order: str | None = None
    input_dtype: str | None = None
    image_input: str | None = None
    softmax: bool | None = None
    top_k: int | None = None
    scores_output: str | None = None


@dataclass(frozen=True)
class ResolvedMetadata:
    """Name, version and metadata, with where each metadata field came from."""

    name: str
    version: int
    metadata: ModelMetadata | None
    origins: dict[str, str] = field(default_factory=dict)  # "preprocess.layout" -> "--layout"

    def origin_of(self, problem: str) -> str:
        """Who gave the field a ``metadata_problem`` message (``metadata.x.y: ...``) names."""
        dotted = problem.split(":", 1)[0].removeprefix("metadata.")
        if dotted in self.origins:
            return self.origins[dotted]
        related = sorted({where for key, where in self.origins.items()
                          if key.startswith(dotted + ".") or dotted.startswith(key + ".")})
        return " and ".join(related) or "the metadata"


class MetadataFile(BaseModel):
    """The ``--metadata`` YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    version: int | None = Field(default=None, ge=0)
    description: str | None = None
    labels: list[str] | str | None = None
    preprocess: dict[str, Any] | None = None
    postprocess: dict[str, Any] | None = None


# (field of the section, MetadataOptions attribute, flag)
_PRE_FLAGS = (("layout", "layout", "--layout"), ("channel_order", "channel_order",
                                                  "--channel-order"),
              ("scale", "scale", "--scale"), ("dtype", "input_dtype", "--input-dtype"),
              ("input", "image_input", "--image-input"))
_POST_FLAGS = (("output", "scores_output", "--scores-output"), ("softmax", "softmax",
                                                                "--softmax"),
               ("top_k", "top_k", "--top-k"))


def resolve_metadata(options: MetadataOptions) -> ResolvedMetadata:
    """Merge the file and the flags and validate the result (not yet against the tensors)."""
    doc = _read_file(options.file) if options.file is not None else MetadataFile()
    where_file = options.file.name if options.file is not None else ""
    origins: dict[str, str] = {}
    fields: dict[str, Any] = {}
    name = options.name or doc.name
    if not name:
        raise ImportMetadataError("no model name: give --name NAME (or name: in the "
                                  "--metadata file)")
    if not _NAME.match(name):
        where = "--name" if options.name else f"{where_file}: name"
        raise ImportMetadataError(f"{where} {name!r}: use letters, digits, '_', '-' and '.' "
                                  "(at most 64, starting with a letter or digit)")
    version = options.version if options.version is not None else doc.version
    if version is not None and version < 0:
        raise ImportMetadataError(f"--version {version}: must be >= 0")
    description = options.description or doc.description
    if description:
        fields["description"] = description
        origins["description"] = "--description" if options.description else where_file
    labels = _labels(options, doc)
    if labels is not None:
        fields["labels"], origins["labels"] = labels
    pre = _section(doc.preprocess, "preprocess", where_file, origins)
    for key, attr, flag in _PRE_FLAGS:
        _flag(pre, key, getattr(options, attr), f"preprocess.{key}", flag, origins)
    if options.size is not None:
        _flag(pre, "size", _size(options.size), "preprocess.size", "--size", origins,
              shown=options.size)
    for key in ("mean", "std"):
        text = getattr(options, key)
        if text is not None:
            _flag(pre, key, _floats(text, f"--{key}"), f"preprocess.{key}", f"--{key}", origins,
                  shown=text)
    post = _section(doc.postprocess, "postprocess", where_file, origins)
    for key, attr, flag in _POST_FLAGS:
        _flag(post, key, getattr(options, attr), f"postprocess.{key}", flag, origins)
    if pre:
        fields["preprocess"] = pre
    if post:
        fields["postprocess"] = post
    if not fields:
        return ResolvedMetadata(name, 1 if version is None else version, None, origins)
    try:
        metadata = ModelMetadata.model_validate(fields)
    except ValidationError as err:
        raise ImportMetadataError(_validation_message(err, origins)) from err
    return ResolvedMetadata(name, 1 if version is None else version, metadata, origins)


def read_labels(path: Path, where: str) -> tuple[str, ...]:
    """One label per line of ``path``, blank lines ignored; ``where`` names it in errors."""
    try:
        if path.stat().st_size > _MAX_LABELS_BYTES:
            raise ImportMetadataError(f"{where}: over {_MAX_LABELS_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ImportMetadataError(f"{where}: no such file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ImportMetadataError(f"{where}: unreadable: {err}") from err
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ImportMetadataError(f"{where}: no labels (one per line)")
    return labels


def _read_file(path: Path) -> MetadataFile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ImportMetadataError(f"--metadata {path}: no such file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ImportMetadataError(f"--metadata {path}: unreadable: {err}") from err
    except yaml.YAMLError as err:
        raise ImportMetadataError(f"{path.name}: not valid YAML: {err}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImportMetadataError(f"{path.name}: a YAML {type(raw).__name__}, not a mapping "
                                  "of name, version, description, labels, preprocess, "
                                  "postprocess")
    try:
        return MetadataFile.model_validate(raw)
    except ValidationError as err:
        origins = {".".join(str(p) for p in e["loc"]): path.name for e in err.errors()}
        raise ImportMetadataError(_validation_message(err, origins)) from err


def _labels(options: MetadataOptions, doc: MetadataFile) -> tuple[tuple[str, ...], str] | None:
    if options.labels is not None:
        where = f"--labels {options.labels}"
        return read_labels(options.labels, where), where
    if doc.labels is None:
        return None
    assert options.file is not None  # doc came from it
    if isinstance(doc.labels, str):
        path = options.file.parent / doc.labels
        where = f"{options.file.name}: labels {doc.labels}"
        return read_labels(path, where), where
    return tuple(doc.labels), options.file.name


def _section(raw: dict[str, Any] | None, name: str, where: str,
             origins: dict[str, str]) -> dict[str, Any]:
    section = dict(raw or {})
    for key in section:
        origins[f"{name}.{key}"] = where
    return section


def _flag(section: dict[str, Any], key: str, value: object, dotted: str, flag: str,
          origins: dict[str, str], *, shown: str | None = None) -> None:
    """Set ``section[key]`` from a flag, recording the flag as it was typed."""
    if value is None:
        return
    section[key] = value
    if isinstance(value, bool):
        origins[dotted] = flag if value else flag.replace("--", "--no-", 1)
    else:
        origins[dotted] = f"{flag} {shown if shown is not None else value}"


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        height, width = (int(part) for part in parts)
    except ValueError as err:
        raise ImportMetadataError(f"--size {text!r}: not HEIGHTxWIDTH, e.g. 224x224") from err
    return height, width


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise ImportMetadataError(f"{flag} {text!r}: not comma-separated numbers, e.g. "
                                  "0.485,0.456,0.406") from err


def _validation_message(err: ValidationError, origins: dict[str, str]) -> str:
    problems = []
    for error in err.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        where = origins.get(dotted) or next(
            (w for key, w in origins.items() if dotted.startswith(key + ".")), None) \
            or _section_origin(dotted, origins)
        problems.append(f"{where}: {dotted}: {error['msg']}")
    return "; ".join(problems)


def _section_origin(dotted: str, origins: dict[str, str]) -> str:
    section = dotted.split(".", 1)[0]
    found = sorted({w for key, w in origins.items() if key.startswith(section + ".")})
    return " and ".join(found) or "the metadata"
