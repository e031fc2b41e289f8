"""Golden vectors: computed once when packaging, reproduced on the device before serving.

The reference outputs come from ONNX Runtime on the CPU (deterministic, and
independent of the Neo artifact under test). The device check runs in a child
process (:mod:`agent.device.packages.golden_check`) so that a kernel that faults or never
returns takes only that child down; this module maps how the child ended to a
typed error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

import agent
from agent.core.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError
from agent.core.model_layout import TESTSET, ModelInfo, TensorSpec
from agent.device.packages.errors import (
    GoldenCrashError,
    GoldenMismatchError,
    GoldenRuntimeError,
    GoldenTimeoutError,
)
from agent.device.packages.golden_check import EXIT_MISMATCH, EXIT_OK, EXIT_RUNTIME
from agent.device.packages.manifest import DEFAULT_TOLERANCE, Golden
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

_CPU_ONLY = OnnxConfig(providers=["CPUExecutionProvider"])
_MAX_DETAIL = 300


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


def run_golden_check(package_dir: Path, *, timeout_s: float,
                     library_path: Path | None = None, label: str | None = None) -> None:
    """Reproduce the manifest's golden vectors in a child process; raise unless they match.

    ``label`` names the package in error messages (default: the directory's name).
    """
    name = label or package_dir.name
    command = [sys.executable, "-m", "agent.device.packages.golden_check",
               str(package_dir.resolve())]
    if library_path is not None:
        command += ["--libdlr", str(library_path.resolve())]
    # `python -m` puts its working directory first on sys.path: run where this very
    # `agent` package lies, so the child imports the same code and nothing else.
    package_root = Path(agent.__file__).resolve().parent.parent
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, cwd=package_root, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        _kill_group(child)
        child.communicate()
        raise GoldenTimeoutError(
            f"golden check of {name} did not finish in {timeout_s:g} s; killed"
        ) from err
    except BaseException:
        _kill_group(child)
        child.communicate()
        raise
    code = child.returncode
    detail = _detail(stdout, stderr)
    if code == EXIT_OK:
        return
    if code < 0:
        signal_name = _signal_name(-code)
        raise GoldenCrashError(f"golden check of {name} died of {signal_name}: {detail}",
                               signal_name=signal_name)
    if code == EXIT_MISMATCH:
        raise GoldenMismatchError(f"{name}: {detail}")
    if code == EXIT_RUNTIME:
        raise GoldenRuntimeError(f"{name}: {detail}")
    raise GoldenRuntimeError(f"golden check of {name} exited {code}: {detail}")


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _detail(stdout: bytes, stderr: bytes) -> str:
    """The child's JSON verdict if it printed one, else the end of its stderr."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and "message" in verdict:
            return str(verdict["message"])[:_MAX_DETAIL]
    tail = stderr.decode(errors="replace").strip().splitlines()
    return tail[-1][:_MAX_DETAIL] if tail else "no output"
