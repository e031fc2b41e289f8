"""A user's input file, read into the tensors a model takes (``edge-agent predict``).

Accepted files, by suffix:

- ``.npy``: one array, for a single-input model;
- ``.npz``: one array per input, by input name (``x`` stands for the only input of a
  single-input model);
- ``.json``: ``{"<input name>": nested list, ...}``, or a bare nested list (or number) for
  a single-input model;
- ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``: an image, for a model whose metadata describes
  image pre-processing (:mod:`agent.device.inference.preprocess`); it feeds the image input.

Each value must fit its input exactly: the input's shape, or that shape without (or with)
a leading batch dimension of 1 when the element count is the same; values that its dtype
holds without change (``300`` is no ``uint8``, ``1.5`` no ``int32``; a float input takes
integers). Anything else is an :class:`~agent.core.errors.InputSpecError` naming the file,
the input, and the dtype and shape it expects; a file that cannot be read at all is a
:class:`~agent.core.errors.ConfigError`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata, image_input_name
from agent.device.inference.preprocess import IMAGE_SUFFIXES, decode_image, image_to_tensor

SINGLE_INPUT_KEY = "x"
ARRAY_SUFFIXES = (".npy", ".npz", ".json")


def describe_spec(spec: TensorSpec) -> str:
    """``'pixels' (float32 [1, 3, 8, 8])``: how errors name an input."""
    return f"{spec.name!r} ({spec.dtype} {list(spec.shape)})"


def read_inputs(path: Path, specs: Sequence[TensorSpec], *,
                metadata: ModelMetadata | None = None) -> tuple[np.ndarray, ...]:
    """The tensors ``path`` gives for inputs ``specs``, in their order, each C-contiguous
    with exactly its spec's dtype and shape (ready for :meth:`Backend.bind`)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        values = _image_values(path, specs, metadata)
    elif suffix in ARRAY_SUFFIXES:
        values = _array_values(path, specs)
    else:
        accepted = ", ".join((*ARRAY_SUFFIXES, *IMAGE_SUFFIXES))
        raise ConfigError(f"{path}: unknown input file type {path.suffix or '(none)'!r} "
                          f"(accepted: {accepted})")
    return match_inputs(values, specs, where=str(path))


def match_inputs(values: Mapping[str, Any], specs: Sequence[TensorSpec], *,
                 where: str) -> tuple[np.ndarray, ...]:
    """One tensor per spec from ``values`` (by input name), each fitted by :func:`fit_input`;
    unknown names and missing inputs are refused."""
    names = [spec.name for spec in specs]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputSpecError(f"{where}: no input named {', '.join(map(repr, unknown))}; the "
                             f"model's inputs are {', '.join(map(describe_spec, specs))}")
    missing = [spec for spec in specs if spec.name not in values]
    if missing:
        raise InputSpecError(f"{where}: missing input(s) {', '.join(map(describe_spec, missing))}")
    return tuple(fit_input(values[spec.name], spec, where=where) for spec in specs)


def fit_input(value: Any, spec: TensorSpec, *, where: str) -> np.ndarray:
    """``value`` (an array, nested list or number) as input ``spec``'s tensor, or
    :class:`InputSpecError` (naming ``where``) when its shape or values do not fit."""
    what = f"{where}: input {describe_spec(spec)}"
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise InputSpecError(f"{what}: not a rectangular array of numbers ({err})") from err
    if array.dtype.kind not in "biuf":
        raise InputSpecError(f"{what}: holds {array.dtype} values, not numbers")
    target = tuple(spec.shape)
    shape = tuple(array.shape)
    if shape != target and not _batch_of_one_apart(shape, target):
        raise InputSpecError(f"{what}: got shape {list(shape)}")
    return np.ascontiguousarray(_fit_dtype(array, np.dtype(spec.dtype), what).reshape(target))


def fit_samples(array: np.ndarray, spec: TensorSpec, *, where: str) -> np.ndarray:
    """``array`` of samples ``[N, ...]`` for input ``spec`` as ``[N, *spec.shape]`` in its
    dtype (each sample fitted as :func:`fit_input` fits one), or :class:`InputSpecError`."""
    what = f"{where}: input {describe_spec(spec)}"
    if array.dtype.kind not in "biuf":
        raise InputSpecError(f"{what}: holds {array.dtype} values, not numbers")
    if array.ndim < 1 or array.shape[0] == 0:
        raise InputSpecError(f"{what}: no samples (shape {list(array.shape)})")
    target = tuple(spec.shape)
    sample = tuple(array.shape[1:])
    if sample != target and not _batch_of_one_apart(sample, target):
        raise InputSpecError(f"{what}: samples of shape {list(sample)} ({array.shape[0]} of "
                             "them)")
    fitted = _fit_dtype(array, np.dtype(spec.dtype), what)
    return np.ascontiguousarray(fitted.reshape((array.shape[0], *target)))


def _batch_of_one_apart(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` is ``target`` with a leading batch dimension of 1 added or dropped."""
    return ((len(target) >= 1 and target[0] == 1 and shape == target[1:])
            or (len(shape) >= 1 and shape[0] == 1 and shape[1:] == target))


def _fit_dtype(array: np.ndarray, dtype: np.dtype[Any], what: str) -> np.ndarray:
    if array.size == 0 or array.dtype == dtype:
        return array.astype(dtype, copy=False)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            result = array.astype(dtype)
        overflow = np.isfinite(array) & ~np.isfinite(result)
        if overflow.any():
            raise InputSpecError(f"{what}: value {_first(array, overflow)} does not fit "
                                 f"{dtype}")
        return result
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.trunc(array))
        if bad.any():
            raise InputSpecError(f"{what}: value {_first(array, bad)} is not an integer, "
                                 f"as {dtype} needs")
    info = np.iinfo(dtype)
    if array.dtype.kind != "b":
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            raise InputSpecError(f"{what}: value {_first(array, outside)} is outside "
                                 f"{dtype}'s range [{info.min}, {info.max}]")
    return array.astype(dtype)


def _first(array: np.ndarray, mask: np.ndarray) -> str:
    """The first value of ``array`` where ``mask`` holds, as a Python number reads."""
    return repr(array[mask].flat[0].item())


def _array_values(path: Path, specs: Sequence[TensorSpec]) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_values(path, specs)
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if not isinstance(array, np.ndarray):
                raise InputSpecError(f"{path}: not a single .npy array")
            return {_only_input(path, specs, "a .npy file holds one array").name: array}
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputSpecError(f"{path}: not a readable {suffix} file: {err}") from err
    names = {spec.name for spec in specs}
    if SINGLE_INPUT_KEY in arrays and SINGLE_INPUT_KEY not in names and len(specs) == 1:
        arrays[specs[0].name] = arrays.pop(SINGLE_INPUT_KEY)
    return arrays


def _json_values(path: Path, specs: Sequence[TensorSpec]) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputSpecError(f"{path}: not readable JSON: {err}") from err
    if isinstance(doc, dict):
        return doc
    if isinstance(doc, (list, int, float)) and not isinstance(doc, bool):
        return {_only_input(path, specs, "a bare JSON list feeds one input").name: doc}
    raise InputSpecError(f"{path}: a JSON {type(doc).__name__}; give an object "
                         "{\"<input name>\": nested list} or, for one input, a nested list")


def _only_input(path: Path, specs: Sequence[TensorSpec], why: str) -> TensorSpec:
    if len(specs) != 1:
        raise InputSpecError(f"{path}: {why}, the model takes {len(specs)}: "
                             f"{', '.join(map(describe_spec, specs))}; give an .npz or a "
                             "JSON object by input name")
    return specs[0]


def _image_values(path: Path, specs: Sequence[TensorSpec],
                  metadata: ModelMetadata | None) -> dict[str, Any]:
    name = image_input_name(metadata, [spec.name for spec in specs])
    if name is None or metadata is None or metadata.preprocess is None:
        raise InputSpecError(f"{path}: an image, but the model's metadata describes no image "
                             "pre-processing (model.json metadata.preprocess); give an .npy, "
                             ".npz or .json of the input tensor")
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise InputSpecError(f"{path}: metadata.preprocess.input {name!r} is not an input of "
                             f"the model ({', '.join(map(describe_spec, specs))})")
    others = [s for s in specs if s.name != name]
    if others:
        raise InputSpecError(f"{path}: an image feeds only input {name!r}; the model also "
                             f"takes {', '.join(map(describe_spec, others))}: give every "
                             "input in an .npz or a JSON object")
    image = decode_image(path)
    try:
        return {name: image_to_tensor(image, metadata.preprocess, spec)}
    except InputSpecError as err:
        raise InputSpecError(f"{path}: {err}") from err
