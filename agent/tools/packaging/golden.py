"""Golden vectors, computed once when packaging: inputs from the model's test set and the
outputs ONNX Runtime gives for them on the CPU (deterministic, and independent of the
Neo artifact under test). A device reproduces them before serving
(:mod:`agent.device.packages.golden`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.core.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError
from agent.core.model_layout import TESTSET, ModelInfo, TensorSpec
from agent.device.packages.manifest import DEFAULT_TOLERANCE, Golden
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

_CPU_ONLY = OnnxConfig(providers=["CPUExecutionProvider"])


def compute_golden(*, model_dir: Path, reference_dir: Path, info: ModelInfo, count: int,
                   tolerance: float = DEFAULT_TOLERANCE) -> Golden:
    """``count`` inputs from ``model_dir``'s test set, with ``reference_dir``'s ONNX outputs."""
    if count < 1:
        raise ConfigError(f"golden count must be >= 1, got {count}")
    if len(info.inputs) != 1:
        raise ConfigError(f"{model_dir}: golden vectors need a single-input model "
                          f"(the test set holds one tensor), it has {len(info.inputs)}")
    samples = _testset_inputs(model_dir / TESTSET, info.inputs[0], count)
    reference = OnnxBackend(artifact_dir=reference_dir, config=_CPU_ONLY)
    try:
        _check_same_specs(reference_dir, "input", info.inputs, reference.inputs)
        _check_same_specs(reference_dir, "output", info.outputs, reference.outputs)
        (buffer,) = buffers = (np.zeros(info.inputs[0].shape, info.inputs[0].dtype),)
        outputs = reference.bind(buffers)
        golden_in: list[dict[str, list[float]]] = []
        golden_out: list[dict[str, list[float]]] = []
        for sample in samples:
            buffer[...] = sample
            reference.run()
            golden_in.append({info.inputs[0].name: _values(sample)})
            golden_out.append({spec.name: _values(out)
                               for spec, out in zip(info.outputs, outputs, strict=True)})
    finally:
        reference.close()
    return Golden(inputs=golden_in, outputs=golden_out, tolerance=tolerance)


def _testset_inputs(path: Path, spec: TensorSpec, count: int) -> list[np.ndarray]:
    try:
        with np.load(path) as data:
            x = np.asarray(data["x"])
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no such file (golden inputs come from it)") \
            from err
    except (OSError, KeyError, ValueError) as err:
        raise ArtifactCorruptError(f"{path}: no readable 'x' array: {err}") from err
    size = int(np.prod(spec.shape))
    if x.ndim < 1 or x.shape[0] == 0 or x[0].size != size:
        raise ArtifactCorruptError(f"{path}: samples of shape {x.shape[1:]} do not fit "
                                   f"input {spec.name} {spec.shape}")
    return [x[i].astype(spec.dtype).reshape(spec.shape) for i in range(min(count, x.shape[0]))]


def _check_same_specs(reference_dir: Path, kind: str, ours: list[TensorSpec],
                      theirs: tuple[TensorSpec, ...]) -> None:
    if [(s.dtype, s.shape) for s in ours] != [(s.dtype, s.shape) for s in theirs]:
        raise ConfigError(f"reference {reference_dir} has {kind}s {list(theirs)}, the packaged "
                          f"model {ours}")


def _values(array: np.ndarray) -> list[float]:
    # float32 -> float is exact and Python's float repr round-trips, so JSON keeps every bit.
    return [float(v) for v in np.asarray(array, dtype=np.float64).ravel()]
