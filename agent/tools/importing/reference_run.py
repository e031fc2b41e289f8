"""Run an imported host-architecture artifact on golden inputs, in a child process.

``python -m agent.tools.importing.reference_run ARTIFACT_DIR INPUTS.npz OUTPUTS.npz
[--libdlr PATH]`` loads the artifact through the agent's own
:class:`~agent.device.runtime.dlr.backend.DlrBackend` (the code that will serve it),
runs every case of ``INPUTS.npz`` (``in/<input>`` arrays ``[N, ...]``) and writes
``OUTPUTS.npz`` (``out/<output>``). It prints one JSON verdict line and exits 0, or 4 when
the runtime refused the artifact or a run failed.

The importer calls :func:`run_reference`: a kernel of a foreign artifact that faults or
never returns ends the child, never the importer, and becomes an
:class:`~agent.tools.importing.errors.ImportGoldenError` (as the stager's golden check does,
:mod:`agent.device.packages.golden`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.core.errors import AgentError
from agent.core.model_layout import GOLDEN_INPUT_PREFIX, GOLDEN_OUTPUT_PREFIX
from agent.device.packages.golden import run_child, signal_name
from agent.tools.importing.arrays import write_npz
from agent.tools.importing.errors import ImportGoldenError

EXIT_OK = 0
EXIT_RUNTIME = 4
DEFAULT_TIMEOUT_S = 120.0


def run_reference(artifact_dir: Path, inputs: dict[str, np.ndarray], work_dir: Path, *,
                  label: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                  libdlr: Path | None = None) -> dict[str, np.ndarray]:
    """The outputs (by name, ``[N, ...]``) of ``artifact_dir`` for ``inputs``, computed by a
    child process; ``label`` names the artifact in errors."""
    in_path, out_path = work_dir / "reference-in.npz", work_dir / "reference-out.npz"
    write_npz(in_path, {GOLDEN_INPUT_PREFIX + name: array for name, array in inputs.items()})
    command = ["agent.tools.importing.reference_run",
               str(artifact_dir.resolve()), str(in_path.resolve()), str(out_path.resolve())]
    if libdlr is not None:
        command += ["--libdlr", str(libdlr.resolve())]
    code, detail = run_child(command, timeout_s=timeout_s)
    if code is None:
        raise ImportGoldenError(f"the reference run of {label} did not finish in "
                                f"{timeout_s:g} s; killed")
    if code < 0:
        raise ImportGoldenError(f"the reference run of {label} died of "
                                f"{signal_name(-code)}: {detail}")
    if code != EXIT_OK:
        raise ImportGoldenError(f"the reference run of {label} failed: {detail}")
    with np.load(out_path, allow_pickle=False) as data:
        return {key.removeprefix(GOLDEN_OUTPUT_PREFIX): np.asarray(data[key])
                for key in data.files}


def reference_outputs(artifact_dir: Path, inputs: dict[str, np.ndarray], *,
                      library_path: Path | None = None) -> dict[str, np.ndarray]:
    """Run every case in this process (the child's work)."""
    from agent.device.runtime.dlr.backend import DlrBackend, DlrConfig

    backend = DlrBackend(artifact_dir=artifact_dir, config=DlrConfig(library_path=library_path))
    try:
        if {spec.name for spec in backend.inputs} != set(inputs):
            raise ImportGoldenError(f"the artifact's inputs are "
                                    f"{[s.name for s in backend.inputs]}, the cases "
                                    f"{sorted(inputs)}")
        count = int(next(iter(inputs.values())).shape[0])
        buffers = tuple(np.zeros(spec.shape, dtype=spec.dtype) for spec in backend.inputs)
        views = backend.bind(buffers)
        results = {spec.name: np.zeros((count, *spec.shape), dtype=spec.dtype)
                   for spec in backend.outputs}
        for case in range(count):
            for spec, buffer in zip(backend.inputs, buffers, strict=True):
                buffer[...] = inputs[spec.name][case].reshape(spec.shape)
            backend.run()
            for spec, view in zip(backend.outputs, views, strict=True):
                results[spec.name][case] = view
        return results
    finally:
        backend.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.tools.importing.reference_run")
    parser.add_argument("artifact_dir", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--libdlr", type=Path, default=None, help="explicit libdlr.so path")
    args = parser.parse_args(argv)
    try:
        with np.load(args.inputs, allow_pickle=False) as data:
            inputs = {key.removeprefix(GOLDEN_INPUT_PREFIX): np.asarray(data[key])
                      for key in data.files}
        outputs = reference_outputs(args.artifact_dir, inputs, library_path=args.libdlr)
        write_npz(args.outputs, {GOLDEN_OUTPUT_PREFIX + name: array
                                 for name, array in outputs.items()})
    except (AgentError, OSError, ValueError) as err:
        print(json.dumps({"ok": False, "message": f"{type(err).__name__}: {err}"}), flush=True)
        return EXIT_RUNTIME
    print(json.dumps({"ok": True, "message": f"{len(outputs)} output(s) computed"}), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
