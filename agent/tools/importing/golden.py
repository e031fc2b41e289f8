"""Golden vectors for an imported model: ``golden.npz`` and model.json's ``golden``.

Where the outputs come from, in this order of preference:

1. ``--golden INPUTS.npz --expected OUTPUTS.npz``: the user's own (source ``user``). They
   are checked by running the host-architecture artifact (else the ONNX reference) on
   the inputs: an output it does not reproduce within ``--tolerance`` is an error that
   gives the max difference.
2. ``--reference-onnx MODEL.onnx``: ONNX Runtime on the CPU computes them (source ``onnx``).
3. The imported host-architecture artifact, run through libdlr in a child process
   (:mod:`agent.tools.importing.reference_run`; source ``dlr-host``, reference
   ``dlr/<target>-<arch>``): every other target of the model must reproduce what the host
   build computes, within the tolerance.
4. An ONNX source of the import (``onnx/model.onnx``): ONNX Runtime computes them.

Inputs are ``--golden``'s when given, else the first ``--golden-count`` cases of the test
set, else seeded made-up values (:func:`agent.tools.importing.arrays.random_inputs`).
The tolerance (``--tolerance``, default 1e-4) is the largest absolute difference a device
may show against these outputs; it is recorded with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.errors import AgentError
from agent.core.model_layout import (
    GOLDEN_INPUT_PREFIX,
    GOLDEN_OUTPUT_PREFIX,
    GoldenInfo,
    GoldenSource,
    TensorSpec,
)
from agent.device.packages.manifest import DEFAULT_TOLERANCE
from agent.device.platform.boards import generic_target
from agent.device.platform.elf import host_arch
from agent.tools.importing.arrays import (
    as_cases,
    case_count,
    cases_by_tensor,
    first_cases,
    random_inputs,
    read_npz,
    write_npz,
)
from agent.tools.importing.errors import GoldenNotReproducedError, ImportGoldenError
from agent.tools.importing.reference_run import DEFAULT_TIMEOUT_S, run_reference
from agent.tools.importing.testset import Testset

DEFAULT_COUNT = 8


@dataclass(frozen=True, kw_only=True)
class GoldenOptions:
    """The golden flags of ``models import``."""

    inputs_file: Path | None = None  # --golden
    expected_file: Path | None = None  # --expected
    reference_onnx: Path | None = None
    tolerance: float = DEFAULT_TOLERANCE
    count: int = DEFAULT_COUNT
    timeout_s: float = DEFAULT_TIMEOUT_S
    libdlr: Path | None = None


@dataclass(frozen=True)
class Reference:
    """Something that computes outputs: a host DLR artifact or an ONNX model."""

    kind: GoldenSource  # "dlr-host" or "onnx"
    path: Path
    name: str  # e.g. "dlr/linux_x86_64-x86_64", "onnx/model.onnx", "resnet.onnx"


@dataclass(frozen=True)
class GoldenCases:
    inputs: dict[str, np.ndarray]  # [N, *shape] by input name
    outputs: dict[str, np.ndarray]
    info: GoldenInfo
    checked_by: str | None = None  # what reproduced user-given outputs

    @property
    def count(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def check_options(options: GoldenOptions) -> None:
    """Refuse contradictory or out-of-range golden flags before anything is read."""
    if options.expected_file is not None and options.inputs_file is None:
        raise ImportGoldenError(f"--expected {options.expected_file.name}: needs --golden "
                                "INPUTS.npz, the inputs those outputs belong to")
    if options.count < 1:
        raise ImportGoldenError(f"--golden-count {options.count}: must be >= 1")
    if not options.tolerance > 0:
        raise ImportGoldenError(f"--tolerance {options.tolerance}: must be > 0")


def make_golden(options: GoldenOptions, *, inputs: Sequence[TensorSpec],
                outputs: Sequence[TensorSpec], host: Reference | None,
                onnx_source: Reference | None, testset: Testset | None,
                work_dir: Path) -> GoldenCases:
    """The golden cases of the model, by the preference of the module docstring."""
    check_options(options)
    if options.inputs_file is not None:
        cases = _user_cases(options.inputs_file, inputs, "--golden", GOLDEN_INPUT_PREFIX)
    elif testset is not None:
        cases = first_cases(testset.inputs, options.count)
    else:
        cases = random_inputs(inputs, options.count)
    onnx_ref = (Reference("onnx", options.reference_onnx, options.reference_onnx.name)
                if options.reference_onnx is not None else None)
    if options.expected_file is not None:
        expected = _user_cases(options.expected_file, outputs, "--expected",
                               GOLDEN_OUTPUT_PREFIX, count=case_count(cases, "--golden",
                                                                      ImportGoldenError))
        checker = host or onnx_ref or onnx_source
        if checker is not None:
            actual = _compute(checker, cases, inputs, outputs, options, work_dir)
            _compare(expected, actual, outputs, options, checker)
        info = GoldenInfo(source="user", reference=None, tolerance=options.tolerance)
        return GoldenCases(cases, expected, info, checker.name if checker else None)
    reference = onnx_ref or host or onnx_source
    if reference is None:
        arch = host_arch()
        raise ImportGoldenError(
            f"no golden vectors can be made: no source is compiled for this machine ({arch}), "
            "no ONNX model was given and no --golden/--expected; give one of: a source "
            f"compiled for {arch} (e.g. Neo's {generic_target(arch)}"
            f"{' or ml_c5' if arch == 'x86_64' else ''}), --reference-onnx MODEL.onnx, or "
            "--golden INPUTS.npz --expected OUTPUTS.npz")
    computed = _compute(reference, cases, inputs, outputs, options, work_dir)
    info = GoldenInfo(source=reference.kind, reference=reference.name,
                      tolerance=options.tolerance)
    return GoldenCases(cases, computed, info)


def write_golden(path: Path, golden: GoldenCases) -> None:
    """``golden.npz``: ``in/<input>`` and ``out/<output>`` arrays with a leading case dim."""
    arrays = {GOLDEN_INPUT_PREFIX + name: array for name, array in golden.inputs.items()}
    arrays |= {GOLDEN_OUTPUT_PREFIX + name: array for name, array in golden.outputs.items()}
    write_npz(path, arrays)


def _user_cases(path: Path, specs: Sequence[TensorSpec], flag: str, prefix: str, *,
                count: int | None = None) -> dict[str, np.ndarray]:
    where = f"{flag} {path.name}"
    arrays = read_npz(path, where, ImportGoldenError)
    other = GOLDEN_OUTPUT_PREFIX if prefix == GOLDEN_INPUT_PREFIX else GOLDEN_INPUT_PREFIX
    arrays = {key: array for key, array in arrays.items() if not key.startswith(other)}
    found = cases_by_tensor(arrays, specs, prefix=prefix, where=where, error=ImportGoldenError)
    cases = {spec.name: as_cases(found[spec.name], spec, where=where, error=ImportGoldenError,
                                 cast=False) for spec in specs}
    got = case_count(cases, where, ImportGoldenError)
    if count is not None and got != count:
        raise ImportGoldenError(f"{where}: {got} case(s), --golden holds {count}")
    return cases


def _compute(reference: Reference, cases: dict[str, np.ndarray],
             inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
             options: GoldenOptions, work_dir: Path) -> dict[str, np.ndarray]:
    if reference.kind == "dlr-host":
        raw = run_reference(reference.path, cases, work_dir, label=reference.name,
                            timeout_s=options.timeout_s, libdlr=options.libdlr)
    else:
        raw = _onnx_outputs(reference, cases, inputs, outputs)
    computed: dict[str, np.ndarray] = {}
    count = case_count(cases, "the golden inputs", ImportGoldenError)
    for spec in outputs:
        array = raw.get(spec.name)
        if array is None or array.shape != (count, *spec.shape):
            raise ImportGoldenError(
                f"{reference.name} gave outputs "
                f"{ {n: list(a.shape) for n, a in raw.items()} }, the model declares "
                f"{[(s.name, [count, *s.shape]) for s in outputs]}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ImportGoldenError(f"{reference.name} computes NaN or infinite values for "
                                    f"output {spec.name!r}; golden outputs must be finite")
        computed[spec.name] = np.ascontiguousarray(array.astype(spec.dtype))
    return computed


def _onnx_outputs(reference: Reference, cases: dict[str, np.ndarray],
                  inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

    try:
        backend = OnnxBackend(artifact_dir=reference.path,
                              config=OnnxConfig(providers=["CPUExecutionProvider"]))
    except AgentError as err:
        raise ImportGoldenError(f"{reference.name}: {err}") from err
    try:
        for kind, ours, theirs in (("inputs", inputs, backend.inputs),
                                   ("outputs", outputs, backend.outputs)):
            if list(ours) != list(theirs):
                raise ImportGoldenError(
                    f"{reference.name}: its {kind} are {_specs(theirs)}, the imported model's "
                    f"{_specs(ours)}")
        buffers = tuple(np.zeros(spec.shape, dtype=spec.dtype) for spec in backend.inputs)
        views = backend.bind(buffers)
        count = case_count(cases, "the golden inputs", ImportGoldenError)
        results = {spec.name: np.zeros((count, *spec.shape), dtype=spec.dtype)
                   for spec in backend.outputs}
        for case in range(count):
            for spec, buffer in zip(backend.inputs, buffers, strict=True):
                buffer[...] = cases[spec.name][case]
            try:
                backend.run()
            except AgentError as err:
                raise ImportGoldenError(f"{reference.name}: {err}") from err
            for spec, view in zip(backend.outputs, views, strict=True):
                results[spec.name][case] = view
        return results
    finally:
        backend.close()


def _compare(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
             outputs: Sequence[TensorSpec], options: GoldenOptions,
             checker: Reference) -> None:
    assert options.expected_file is not None
    worst: tuple[float, str, int] = (0.0, "", 0)
    for spec in outputs:
        diff = np.abs(actual[spec.name].astype(np.float64)
                      - expected[spec.name].astype(np.float64))
        per_case = diff.reshape(diff.shape[0], -1).max(axis=1)
        case = int(np.argmax(per_case))
        if float(per_case[case]) > worst[0]:
            worst = (float(per_case[case]), spec.name, case)
    if worst[0] > options.tolerance:
        value, name, case = worst
        raise GoldenNotReproducedError(
            f"--expected {options.expected_file.name}: array {name!r} is not reproduced by "
            f"{checker.name}: max |difference| {value:.6g} (case {case}) exceeds --tolerance "
            f"{options.tolerance:g}")


def _specs(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.dtype} {list(s.shape)}" for s in specs)
