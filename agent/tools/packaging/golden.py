"""Golden vectors, chosen once when packaging: inputs and the outputs a device must reproduce
before a package may serve (:mod:`agent.device.packages.golden`).

They come from one of two places, the first that applies:

1. the model directory's ``golden.npz`` (``in/<input>`` and ``out/<output>`` arrays with a
   leading case dimension), whose provenance model.json's ``golden`` states: ONNX Runtime,
   the host-architecture Neo artifact through libdlr, or expected outputs the user gave.
   ``edge-agent models import`` writes it, so a model that exists only as a Neo artifact
   can be packaged; an explicit ``reference`` takes precedence over it;
2. ONNX Runtime on the CPU (deterministic, and independent of the Neo artifact under test)
   on ``reference``'s ``onnx/model.onnx`` (default: the model's own), for inputs from the
   model's test set: ``x`` for a single-input model, or one array per input name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from agent.core.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError
from agent.core.model_layout import (
    GOLDEN,
    GOLDEN_INPUT_PREFIX,
    GOLDEN_OUTPUT_PREFIX,
    MODEL_INFO,
    ONNX_FILE,
    TESTSET,
    ModelInfo,
    TensorSpec,
)
from agent.device.inference.sources import read_testset
from agent.device.packages.manifest import DEFAULT_TOLERANCE, Golden
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

_CPU_ONLY = OnnxConfig(providers=["CPUExecutionProvider"])
Case = dict[str, np.ndarray]


def package_golden(model_dir: Path, info: ModelInfo, *, reference: Path | None,
                   count: int) -> Golden:
    """Up to ``count`` golden cases for a package of ``model_dir`` (see the module's order)."""
    if count < 1:
        raise ConfigError(f"golden count must be >= 1, got {count}")
    if reference is None and (model_dir / GOLDEN).is_file():
        return read_golden(model_dir, info, count)
    reference_dir = reference or model_dir
    if not (reference_dir / ONNX_FILE).is_file():
        if reference is not None:
            raise ArtifactMissingError(f"{reference_dir / ONNX_FILE}: no such file (--reference "
                                       "names a model directory with an ONNX export)")
        raise ArtifactMissingError(
            f"{model_dir}: no golden vectors: no {GOLDEN} and no ONNX export ({ONNX_FILE}) to "
            f"compute them; import the model with `edge-agent models import` (which writes "
            f"{GOLDEN}) or give --reference DIR (a model directory whose {ONNX_FILE} computes "
            "them)")
    return compute_golden(model_dir=model_dir, reference_dir=reference_dir, info=info,
                          count=count)


def read_golden(model_dir: Path, info: ModelInfo, count: int) -> Golden:
    """The first ``count`` cases of ``model_dir``'s ``golden.npz``, checked against the
    model's tensors, with the provenance and tolerance model.json's ``golden`` gives."""
    path = model_dir / GOLDEN
    if info.golden is None:
        raise ArtifactCorruptError(f"{model_dir / MODEL_INFO}: golden: missing; {GOLDEN} needs "
                                   "it to say what computed its outputs (source, tolerance)")
    specs = {GOLDEN_INPUT_PREFIX + s.name: s for s in info.inputs}
    specs |= {GOLDEN_OUTPUT_PREFIX + s.name: s for s in info.outputs}
    arrays = _load_npz(path)
    missing = [key for key in specs if key not in arrays]
    if missing:
        raise ArtifactCorruptError(f"{path}: no array {missing[0]!r} (it needs "
                                   f"{', '.join(specs)})")
    unknown = sorted(set(arrays) - set(specs))
    if unknown:
        raise ArtifactCorruptError(f"{path}: array {unknown[0]!r} is no input or output of the "
                                   f"model (it needs {', '.join(specs)})")
    cases = {key: _case_array(path, key, arrays[key], spec) for key, spec in specs.items()}
    counts = {key: len(array) for key, array in cases.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ArtifactCorruptError(f"{path}: the arrays hold different or no case counts "
                                   f"{counts}")
    n = min(count, next(iter(counts.values())))
    inputs = [{s.name: _values(cases[GOLDEN_INPUT_PREFIX + s.name][i]) for s in info.inputs}
              for i in range(n)]
    outputs = [{s.name: _values(cases[GOLDEN_OUTPUT_PREFIX + s.name][i]) for s in info.outputs}
               for i in range(n)]
    return Golden(inputs=inputs, outputs=outputs, tolerance=info.golden.tolerance,
                  source=info.golden.source, reference=info.golden.reference)


def compute_golden(*, model_dir: Path, reference_dir: Path, info: ModelInfo, count: int,
                   tolerance: float = DEFAULT_TOLERANCE) -> Golden:
    """``count`` inputs from ``model_dir``'s test set, with ``reference_dir``'s ONNX outputs."""
    if count < 1:
        raise ConfigError(f"golden count must be >= 1, got {count}")
    samples = testset_inputs(model_dir / TESTSET, info.inputs, count)
    reference = OnnxBackend(artifact_dir=reference_dir, config=_CPU_ONLY)
    try:
        ours = _reference_inputs(reference_dir, info.inputs, reference.inputs)
        _check_same_specs(reference_dir, "output", info.outputs, reference.outputs)
        buffers = tuple(np.zeros(spec.shape, spec.dtype) for spec in reference.inputs)
        outputs = reference.bind(buffers)
        golden_in: list[dict[str, list[float]]] = []
        golden_out: list[dict[str, list[float]]] = []
        for sample in samples:
            for spec, buffer in zip(ours, buffers, strict=True):
                buffer[...] = sample[spec.name]
            reference.run()
            golden_in.append({spec.name: _values(sample[spec.name]) for spec in info.inputs})
            golden_out.append({spec.name: _values(out)
                               for spec, out in zip(info.outputs, outputs, strict=True)})
    finally:
        reference.close()
    where = ONNX_FILE.as_posix() if reference_dir == model_dir else \
        f"{reference_dir.name}/{ONNX_FILE.as_posix()}"
    return Golden(inputs=golden_in, outputs=golden_out, tolerance=tolerance, source="onnx",
                  reference=where)


def check_onnx_export(model_dir: Path, info: ModelInfo) -> None:
    """Raise unless ``model_dir``'s ONNX export has the tensors model.json declares."""
    backend = OnnxBackend(artifact_dir=model_dir, config=_CPU_ONLY)
    try:
        _reference_inputs(model_dir, info.inputs, backend.inputs)
        _check_same_specs(model_dir, "output", info.outputs, backend.outputs)
    finally:
        backend.close()


def testset_inputs(path: Path, specs: list[TensorSpec], count: int) -> list[Case]:
    """Up to ``count`` samples of the model's test set, each input by name in its spec's
    shape and dtype (read as the inference loop reads it,
    :func:`agent.device.inference.sources.read_testset`)."""
    testset = read_testset(path, specs)
    return [{spec.name: samples[i] for spec, samples in zip(specs, testset.inputs, strict=True)}
            for i in range(min(count, len(testset)))]


def _load_npz(path: Path, what: str = "") -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except FileNotFoundError as err:
        why = f" ({what})" if what else ""
        raise ArtifactMissingError(f"{path}: no such file{why}") from err
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, AttributeError) as err:
        raise ArtifactCorruptError(f"{path}: not a readable .npz of arrays: {err}") from err


def _case_array(path: Path, key: str, array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` ([N, *spec.shape]) in ``spec``'s dtype, or a typed error naming it."""
    if array.shape[1:] != spec.shape or array.ndim != len(spec.shape) + 1:
        raise ArtifactCorruptError(f"{path}: array {key!r} has shape {list(array.shape)}, "
                                   f"{spec.name} needs [N, {', '.join(map(str, spec.shape))}]")
    if array.dtype.kind not in "biuf":
        raise ArtifactCorruptError(f"{path}: array {key!r} holds {array.dtype}, not numbers")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ArtifactCorruptError(f"{path}: array {key!r} holds NaN or infinity")
    cast = array.astype(spec.dtype)
    if key.startswith(GOLDEN_INPUT_PREFIX) and np.dtype(spec.dtype).kind != "f" and \
            not np.array_equal(cast, array):
        raise ArtifactCorruptError(f"{path}: array {key!r}: its values do not fit {spec.dtype}")
    return cast


def _reference_inputs(reference_dir: Path, ours: list[TensorSpec],
                      theirs: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """Our input spec for each of the reference's inputs, in the reference's order: by name
    when the names agree, else by position."""
    by_name = {spec.name: spec for spec in ours}
    if set(by_name) == {spec.name for spec in theirs}:
        matched = [by_name[spec.name] for spec in theirs]
        _check_same_specs(reference_dir, "input", matched, theirs)
        return matched
    _check_same_specs(reference_dir, "input", ours, theirs)
    return list(ours)


def _check_same_specs(reference_dir: Path, kind: str, ours: list[TensorSpec],
                      theirs: tuple[TensorSpec, ...]) -> None:
    if [(s.dtype, s.shape) for s in ours] != [(s.dtype, s.shape) for s in theirs]:
        raise ConfigError(f"reference {reference_dir} has {kind}s {list(theirs)}, the packaged "
                          f"model {ours}")


def _values(array: np.ndarray) -> list[float]:
    # float32 -> float is exact and Python's float repr round-trips, so JSON keeps every bit.
    return [float(v) for v in np.asarray(array, dtype=np.float64).ravel()]
