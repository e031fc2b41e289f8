"""``edge-agent predict``: one inference on a user's own input, printed as JSON.

::

    edge-agent predict --model DIR|ARTIFACT_DIR|MODEL.onnx|PACKAGE.tar.gz --input FILE
                       [--output OUT.npz] [--backend dlr|onnx] [--trusted-key ID=KEY ...]
                       [--top-k N] [--json] [--board NAME | --device-root DIR]
    edge-agent predict --server SOCKET --input FILE [--output OUT.npz] [--top-k N] [--json]

``--input`` is an ``.npy``, ``.npz`` or ``.json`` file of the input tensors, or an image
when the model's metadata describes image pre-processing
(:mod:`agent.device.inference.inputs`). The report names the model, its label and the
backend, then each output (name, dtype, shape, values); for a model whose metadata has
post-processing or labels, and whenever ``--top-k`` is given, also the best classes of the
scores output (``top_k``: index, label, score). ``--output`` writes the outputs to an
``.npz`` by output name instead of printing their values. The report is indented JSON;
``--json`` prints it on one line.

``--server`` sends the input to a running agent instead, through its native socket
(:mod:`agent.client`; the agent's ``inference.sock`` in its working folder): the model,
its inputs and its pre-processing are the served model's, no runtime is loaded here, and
the report also names the variant and version that answered (``variant``, ``version``).

A signed package (a ``.tar.gz`` whose first member is ``manifest.json``) is verified
first, exactly as a device stages it (signature against ``--trusted-key``, files, target,
golden vectors), into a temporary folder; its model, backend and metadata are then the
manifest's. Nothing is written anywhere unless ``--output`` is given, and only after the
inference succeeded.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from agent.core.model_layout import TensorSpec
    from agent.core.model_metadata import ModelMetadata
    from agent.device.platform.profile import DeviceProfile
    from agent.device.runtime.base import Backend
    from agent.wire.signing import TrustStore

PACKAGE_SUFFIXES = (".tar.gz", ".tgz")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``predict`` (the device options are added beside, as for ``run``)."""
    parser.add_argument("--model", type=Path, default=None,
                        help="model directory, one Neo artifact directory, an .onnx file, or "
                             "a signed model package (.tar.gz; verified first)")
    parser.add_argument("--server", type=Path, default=None, metavar="SOCKET",
                        help="ask a running agent instead of loading a model: its native "
                             "socket (inference.sock in the component's working folder)")
    parser.add_argument("--input", type=Path, required=True, metavar="FILE",
                        help=".npy (one input), .npz (arrays by input name), .json "
                             "({name: nested list}, or a list for one input), or an image "
                             "(.png/.jpg/.jpeg/.bmp) for a model with image pre-processing")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE.npz",
                        help="write the outputs (by output name) here instead of printing "
                             "their values")
    parser.add_argument("--backend", choices=("dlr", "onnx"), default=None,
                        help="runtime (default: a package's own; dlr, or onnx for an .onnx "
                             "file)")
    parser.add_argument("--trusted-key", action="append", default=[], metavar="ID=KEY",
                        help="a public key a package may be signed by (key file, PEM or "
                             "base64; repeatable; required for a package)")
    parser.add_argument("--top-k", type=int, default=None, metavar="N",
                        help="report the N best classes (default: the metadata's top_k)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads")
    parser.add_argument("--dlr-library", choices=("installed", "artifact"), default="installed",
                        help="which libdlr.so wins when the artifact ships its own")
    parser.add_argument("--libdlr", type=Path, default=None, help="explicit libdlr.so path")
    parser.add_argument("--json", action="store_true", help="print the report on one line")


@dataclass(frozen=True)
class LoadedModel:
    """What one prediction runs: the backend, and how to describe the model."""

    backend: Backend
    label: str
    metadata: ModelMetadata | None


def predict_from_args(args: argparse.Namespace, profile: DeviceProfile) -> int:
    _check_args(args)
    if args.server is not None:
        report = predict_server(args.server, args.input, top_k=args.top_k)
    else:
        with _load(args, profile) as model:
            try:
                report = predict(model, args.input, top_k=args.top_k,
                                 model_name=str(args.model))
            finally:
                model.backend.close()
    outputs: dict[str, np.ndarray] = report.pop("_arrays")
    if args.output is not None:
        _write_npz(args.output, outputs)
        report["written"] = str(args.output)
    else:
        for entry in report["outputs"]:
            entry["values"] = outputs[entry["name"]].tolist()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


def predict(model: LoadedModel, input_file: Path, *, top_k: int | None,
            model_name: str) -> dict[str, Any]:
    """Run ``model`` once on ``input_file``; the report (``_arrays``: the outputs by name,
    copied out of the runtime)."""
    import numpy as np

    from agent.device.inference.inputs import read_inputs

    backend = model.backend
    arrays = read_inputs(input_file, backend.inputs, metadata=model.metadata)
    bound = backend.bind(arrays)
    backend.run()
    # Copied now: a DLR output is a view on memory the runtime frees when it is closed.
    outputs = {spec.name: np.array(out, copy=True)
               for spec, out in zip(backend.outputs, bound, strict=True)}
    report: dict[str, Any] = {
        "model": model_name, "label": model.label, "backend": backend.name,
        "input": str(input_file)}
    return _with_outputs(report, outputs, backend.outputs, model.metadata, top_k)


def _with_outputs(report: dict[str, Any], outputs: dict[str, np.ndarray],
                  specs: Sequence[TensorSpec], metadata: ModelMetadata | None,
                  top_k: int | None) -> dict[str, Any]:
    """``report`` with the outputs' specs, the best classes when asked or described, and
    the arrays themselves (under ``_arrays``, for --output)."""
    from agent.device.inference.postprocess import predictions, wants_top_k

    report["outputs"] = [{"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
                         for spec in specs]
    if top_k is not None or wants_top_k(metadata):
        name, best = predictions(outputs, metadata, top_k)
        report["scores_output"] = name
        report["top_k"] = [p.to_dict() for p in best]
    report["_arrays"] = outputs
    return report


def predict_server(socket_path: Path, input_file: Path, *,
                   top_k: int | None) -> dict[str, Any]:
    """Ask the agent on ``socket_path`` for one prediction on ``input_file``; the report of
    :func:`predict` plus the variant and version that answered."""
    from agent.client import InferenceClient
    from agent.device.inference.inputs import read_inputs

    with InferenceClient(socket_path) as client:
        served = client.metadata()
        arrays = read_inputs(input_file, served.inputs, metadata=served.metadata)
        result = client.infer({spec.name: array
                               for spec, array in zip(served.inputs, arrays, strict=True)})
    outputs = {spec.name: result.outputs[spec.name] for spec in served.outputs}
    report: dict[str, Any] = {
        "model": served.name, "label": result.version, "backend": served.platform,
        "server": str(socket_path), "variant": result.variant, "version": result.version,
        "input": str(input_file)}
    return _with_outputs(report, outputs, served.outputs, served.metadata, top_k)


def _check_args(args: argparse.Namespace) -> None:
    if (args.model is None) == (args.server is None):
        raise ConfigError("give either --model (run the model here) or --server SOCKET (ask "
                          "a running agent)")
    if args.server is not None:
        local = [flag for flag, given in (
            ("--backend", args.backend is not None), ("--trusted-key", bool(args.trusted_key)),
            ("--threads", args.threads is not None), ("--libdlr", args.libdlr is not None),
            ("--dlr-library", args.dlr_library != "installed")) if given]
        if local:
            raise ConfigError(f"{', '.join(local)} configure a model run here; with --server "
                              "the agent's own model answers")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if not args.input.is_file():
        raise ConfigError(f"--input {args.input}: no such file")
    if args.output is not None:
        if args.output.suffix != ".npz":
            raise ConfigError(f"--output {args.output}: the outputs are written as .npz; "
                              "name the file FILE.npz")
        if args.output.is_dir():
            raise ConfigError(f"--output {args.output} is a directory")


def is_package(path: Path) -> bool:
    """Whether ``path`` names a package file (rather than a model directory or file)."""
    return path.is_file() and path.name.lower().endswith(PACKAGE_SUFFIXES)


@contextmanager
def _load(args: argparse.Namespace, profile: DeviceProfile) -> Iterator[LoadedModel]:
    if is_package(args.model):
        with _load_package(args, profile) as model:
            yield model
        return
    yield _load_unpackaged(args, profile)


def _load_unpackaged(args: argparse.Namespace, profile: DeviceProfile) -> LoadedModel:
    from agent.cli.run import backend_config
    from agent.core.model_layout import MODEL_INFO, model_label, read_model_info
    from agent.device.platform.resolve import default_backend, resolve_model
    from agent.device.runtime import load_backend

    if args.trusted_key:
        raise ConfigError("--trusted-key verifies a package; "
                          f"{args.model} is not one (.tar.gz)")
    backend_name = args.backend or default_backend(args.model)
    resolved = resolve_model(args.model, backend=backend_name, profile=profile)
    info = None
    if resolved.model_dir is not None and (resolved.model_dir / MODEL_INFO).is_file():
        info = read_model_info(resolved.model_dir)
    args.backend = backend_name
    backend = load_backend(resolved.load_dir, backend_config(args))
    label = model_label(info) if info is not None else args.model.name
    return LoadedModel(backend=backend, label=label,
                       metadata=info.metadata if info is not None else None)


@contextmanager
def _load_package(args: argparse.Namespace, profile: DeviceProfile) -> Iterator[LoadedModel]:
    from agent.cli.run import backend_config
    from agent.core.model_layout import MODEL_INFO, read_model_info
    from agent.device.packages.archive import read_manifest_member
    from agent.device.packages.errors import PackageFormatError
    from agent.device.packages.limits import PackageLimits
    from agent.device.packages.staging import stage
    from agent.device.runtime import load_backend

    trust = _trust_store(args)
    try:
        read_manifest_member(args.model, max_bytes=PackageLimits().max_manifest_bytes)
    except PackageFormatError as err:
        raise PackageFormatError(
            f"{args.model} is not a signed model package ({err}); a Neo compilation output "
            "becomes a model directory with `edge-agent models import` first") from err
    with tempfile.TemporaryDirectory(prefix="edge-agent-predict-") as work:
        staged = stage(args.model, trust=trust, min_version=0, profile=profile,
                       work_dir=Path(work), dlr_library=args.libdlr)
        manifest = staged.manifest
        if args.backend is not None and args.backend != manifest.backend:
            raise ConfigError(f"{args.model} is a {manifest.backend} package; --backend "
                              f"{args.backend} cannot run it")
        args.backend = manifest.backend
        metadata = manifest.metadata
        if metadata is None and (staged.dir / MODEL_INFO).is_file():
            # model.json is one of the files the signature covers (by digest).
            metadata = read_model_info(staged.dir).metadata
        backend = load_backend(staged.artifact_dir, backend_config(args))
        yield LoadedModel(backend=backend, label=manifest.label, metadata=metadata)


def _trust_store(args: argparse.Namespace) -> TrustStore:
    from agent.cli.options import trusted_keys_from_args
    from agent.wire.signing import TrustStore

    if not args.trusted_key:
        raise ConfigError(f"{args.model} is a signed package: verifying it needs "
                          "--trusted-key ID=KEY (the public key it was signed with)")
    return TrustStore(keys=trusted_keys_from_args(args.trusted_key))


def _write_npz(path: Path, outputs: dict[str, np.ndarray]) -> None:
    import numpy as np

    from agent.core.durable import atomic_write

    buffer = io.BytesIO()
    # As np.savez lays an .npz out, but with any output name (savez's own keywords too).
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in outputs.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    try:
        atomic_write(path, buffer.getvalue())
    except OSError as err:
        raise ConfigError(f"--output {path}: cannot be written: {err}") from err
