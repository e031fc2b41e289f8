"""``python -m agent.device.packages.golden_check DIR``: reproduce a package's golden vectors.

Runs in a child process of the stager: it loads the package with the backend its manifest
names (a Neo artifact through the agent's own
:class:`~agent.device.runtime.dlr.backend.DlrBackend`, an ONNX package through
:class:`~agent.device.runtime.onnx.OnnxBackend`), with the settings that will serve it
(``--config``: the runtime settings as JSON, :mod:`agent.device.packages.backends`), and
compares each output with the manifest's within its tolerance. Inputs are set by name;
outputs are taken in the manifest's order. It prints one JSON verdict line and exits with:

    0  every output matched
    2  bad usage (argparse)
    3  an output differs beyond the tolerance (or is not finite)
    4  the manifest or the runtime failed (load refused, a run returned an error)
    5  the model's tensors (names, dtypes, shapes) are not the manifest's specs

A fault or a hang in a kernel ends this process, never the stager.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.core.errors import AgentError, ModelLoadError

if TYPE_CHECKING:
    from agent.core.model_layout import TensorSpec
    from agent.device.runtime import BackendConfig

EXIT_OK = 0
EXIT_MISMATCH = 3
EXIT_RUNTIME = 4
EXIT_SPECS = 5


def check_package(package_dir: Path, *, library_path: Path | None = None,
                  config: BackendConfig | None = None) -> tuple[bool, str]:
    """(matched, message) for the package unpacked in ``package_dir``, loaded with
    ``config`` when it configures the package's runtime (else that runtime's defaults);
    ``library_path`` overrides a DLR configuration's libdlr."""
    from agent.device.packages.backends import package_backend_config
    from agent.device.packages.manifest import (
        manifest_file,
        package_artifact_dir,
        read_package_manifest,
    )
    from agent.device.runtime import DlrConfig, load_backend

    try:
        manifest = read_package_manifest(package_dir)
    except OSError as err:
        raise ModelLoadError(f"{manifest_file(package_dir)}: {err.strerror or err}") from err
    settings = package_backend_config(manifest.backend, config)
    if library_path is not None and isinstance(settings, DlrConfig):
        settings = settings.model_copy(update={"library_path": library_path})
    backend = load_backend(package_artifact_dir(package_dir, manifest), settings)
    try:
        check_specs(backend.inputs, backend.outputs, manifest.inputs, manifest.outputs)
        buffers = tuple(np.zeros(spec.shape, dtype=spec.dtype) for spec in backend.inputs)
        outputs = backend.bind(buffers)
        tolerance = manifest.golden.tolerance
        worst = 0.0
        cases = zip(manifest.golden.inputs, manifest.golden.outputs, strict=True)
        for index, (case_in, case_out) in enumerate(cases):
            for spec, buffer in zip(backend.inputs, buffers, strict=True):
                buffer[...] = np.asarray(case_in[spec.name], dtype=spec.dtype).reshape(spec.shape)
            backend.run()
            for spec, out in zip(manifest.outputs, outputs, strict=True):
                expected = np.asarray(case_out[spec.name], dtype=np.float64).reshape(spec.shape)
                diff = float(np.max(np.abs(out.astype(np.float64) - expected)))
                if not diff <= tolerance:  # also catches NaN
                    return False, (f"golden case {index}, output {spec.name}: max |diff| {diff:.3g}"
                                   f" exceeds tolerance {tolerance:g}")
                worst = max(worst, diff)
        return True, (f"{len(manifest.golden.inputs)} golden case(s) matched on "
                      f"{manifest.backend} (max |diff| {worst:.3g}, tolerance {tolerance:g})")
    finally:
        backend.close()


def check_specs(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                declared_inputs: Sequence[TensorSpec],
                declared_outputs: Sequence[TensorSpec]) -> None:
    """Raise :class:`TensorSpecMismatchError` unless the runtime's tensors are the
    manifest's: inputs by name with the same dtype and shape, outputs in order with the same
    dtype and shape (a DLR artifact's outputs have no names of their own)."""
    from agent.device.packages.errors import TensorSpecMismatchError

    ours = {spec.name: (spec.dtype, spec.shape) for spec in inputs}
    theirs = {spec.name: (spec.dtype, spec.shape) for spec in declared_inputs}
    if ours != theirs:
        raise TensorSpecMismatchError(
            f"the model takes inputs {_layouts(inputs)}, the manifest says "
            f"{_layouts(declared_inputs)}")
    if [(s.dtype, s.shape) for s in outputs] != [(s.dtype, s.shape) for s in declared_outputs]:
        raise TensorSpecMismatchError(
            f"the model gives outputs {_layouts(outputs)}, the manifest says "
            f"{_layouts(declared_outputs)}")


def _layouts(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{spec.name} {spec.dtype}{list(spec.shape)}" for spec in specs) or "none"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.device.packages.golden_check")
    parser.add_argument("package_dir", type=Path)
    parser.add_argument("--libdlr", type=Path, default=None, help="explicit libdlr.so path")
    parser.add_argument("--config", default=None,
                        help="the device's runtime settings, JSON (a BackendConfig)")
    args = parser.parse_args(argv)
    # Verification is background work: the device keeps serving while it runs, and on a
    # board with few cores the serving thread must win the CPU.
    with contextlib.suppress(OSError):
        os.nice(10)
    from agent.device.packages.errors import TensorSpecMismatchError

    try:
        config = None if args.config is None else parse_backend_config(args.config)
        matched, message = check_package(args.package_dir, library_path=args.libdlr,
                                         config=config)
    except TensorSpecMismatchError as err:
        _say(ok=False, kind=type(err).__name__, message=str(err))
        return EXIT_SPECS
    except (AgentError, ValueError) as err:  # ValueError: pydantic's ValidationError
        _say(ok=False, kind=type(err).__name__, message=f"{type(err).__name__}: {err}")
        return EXIT_RUNTIME
    _say(ok=matched, kind="ok" if matched else "mismatch", message=message)
    return EXIT_OK if matched else EXIT_MISMATCH


def parse_backend_config(text: str) -> BackendConfig:
    """Runtime settings from their JSON form (``model_dump_json`` of a BackendConfig)."""
    from pydantic import TypeAdapter

    from agent.device.runtime import BackendConfig

    config: BackendConfig = TypeAdapter(BackendConfig).validate_json(text)
    return config


def _say(*, ok: bool, kind: str, message: str) -> None:
    print(json.dumps({"ok": ok, "kind": kind, "message": message}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
