"""Build every reference model directory: train, export to ONNX, compile Neo artifacts.

``python -m models.build --out build/models`` writes::

    digits-v1/  digits-v2/           good versions: every default Neo target, native or
                                     cross-compiled, plus host builds for emulated boards
    digits-v1-slow/ -wrong/ -crash/  deliberately bad builds of v1, host artifact only
    digits-v1-segfault/ -hang/
    .build/                          training jobs, checkpoints and stamps (not shipped)

and ``build/vision/vision-v1/`` (``--vision-out``), the 224x224x3 image model of
:mod:`models.vision`, kept out of ``build/models`` so that folder holds one model name.

Training runs as a SageMaker-convention job (``models.digits.train`` in a
subprocess, configured only through ``SM_*`` variables). Each step is stamped
with a digest of everything it depends on, so a second build with unchanged
inputs only reads and hashes. ARM artifacts are cross-compiled when Debian's
cross gcc is on PATH and skipped, with the reason logged, when it is not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write, atomic_write_text
from agent.core.errors import DeviceProfileError, ModelBuildError
from agent.core.model_layout import DLR_DIR, MODEL_INFO, ONNX_FILE, TESTSET, ModelInfo, TensorSpec
from agent.device.platform.boards import generic_target
from agent.device.platform.elf import host_arch
from agent.device.platform.targets import DEFAULT_BUILD_TARGETS, NEO_TARGETS
from models.digits import train
from models.digits.data import N_CLASSES, N_FEATURES, load_split
from models.export.kernels import Fault
from models.export.neo import ArtifactRequest, Compiler, export_neo, find_compiler
from models.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from models.files import load_npz, npz_bytes
from models.vision import build_vision

Log = Callable[[str], None]

MODEL_NAME = "digits"
WORK_DIR = ".build"
_SOURCE_ROOT = Path(__file__).resolve().parent  # the models package
_TRAIN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Training:
    """One training job; versions differ in seed and network width."""

    key: str
    hyperparameters: dict[str, object]


TRAININGS: dict[str, Training] = {
    "v1": Training("v1", {"seed": 0, "hidden_sizes": [128, 64], "epochs": 30, "lr": 0.002,
                          "batch_size": 32, "checkpoint_every": 5}),
    "v2": Training("v2", {"seed": 1, "hidden_sizes": [96, 48], "epochs": 30, "lr": 0.002,
                          "batch_size": 32, "checkpoint_every": 5}),
}


@dataclass(frozen=True)
class ModelSpec:
    """One model directory: which training it ships and how (if at all) it is broken."""

    version: str
    training: str
    variant: str | None = None
    fault: Fault | None = None
    permute_classes: bool = False
    onnx: bool = True

    @property
    def dir_name(self) -> str:
        suffix = f"-{self.variant}" if self.variant else ""
        return f"{MODEL_NAME}-v{self.version}{suffix}"

    @property
    def all_targets(self) -> bool:
        # Bad builds exist to exercise the agent's guardrails on the host, not to ship.
        return self.variant is None


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("1", "v1"),
    ModelSpec("2", "v2"),
    ModelSpec("1", "v1", variant="slow", fault="slow", onnx=False),
    # Same network with its output classes rotated: runs fine, answers wrongly;
    # the ONNX export carries the same fault so both backends agree on it.
    ModelSpec("1", "v1", variant="wrong", permute_classes=True),
    ModelSpec("1", "v1", variant="crash", fault="crash", onnx=False),
    ModelSpec("1", "v1", variant="segfault", fault="segfault", onnx=False),
    ModelSpec("1", "v1", variant="hang", fault="hang", onnx=False),
)


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def _sources_digest(*relative: str) -> str:
    files = sorted(path for pattern in relative for path in _SOURCE_ROOT.glob(pattern))
    return _digest(*(f"{path.relative_to(_SOURCE_ROOT)}\0".encode() + path.read_bytes()
                     for path in files))


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)


def _stamp_ok(stamp: Path, digest: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == digest


def permute_classes(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 'wrong' build: output j computes what output j-1 did, so every answer is off by one."""
    last = sum(1 for name in params if name.startswith("w")) - 1
    order = np.roll(np.arange(params[f"b{last}"].shape[0]), 1)
    permuted = dict(params)
    permuted[f"w{last}"] = np.ascontiguousarray(params[f"w{last}"][:, order])
    permuted[f"b{last}"] = np.ascontiguousarray(params[f"b{last}"][order])
    return permuted


# -- training ------------------------------------------------------------------------------


def _prepare_data(work: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    split = load_split()
    train_dir, test_dir = work / "data" / "train", work / "data" / "test"
    _write_if_changed(train_dir / "train.npz", npz_bytes({"x": split.x_train, "y": split.y_train}))
    testset = {"x": split.x_test, "y": split.y_test}
    _write_if_changed(test_dir / "test.npz", npz_bytes(testset))
    return train_dir, test_dir, testset


def _train_all(work: Path, train_dir: Path, test_dir: Path, log: Log) -> dict[str, Path]:
    """Run the training jobs whose inputs changed (in parallel); returns their model dirs."""
    data_digest = _digest((train_dir / "train.npz").read_bytes(),
                          (test_dir / "test.npz").read_bytes())
    code_digest = _sources_digest("digits/*.py", "files.py")
    model_dirs: dict[str, Path] = {}
    running: list[tuple[Training, subprocess.Popen[str], Path, str]] = []
    for training in TRAININGS.values():
        job = work / "train" / training.key
        model_dirs[training.key] = job / "model"
        hps = json.dumps(training.hyperparameters, sort_keys=True)
        digest = _digest(hps, data_digest, code_digest)
        stamp = job / "stamp"
        if _stamp_ok(stamp, digest) and (job / "model" / train.WEIGHTS_FILE).is_file():
            log(f"training {training.key}: up to date")
            continue
        # Checkpoints of a job with other inputs must not be resumed into this one.
        shutil.rmtree(job, ignore_errors=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(_SOURCE_ROOT.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            train.ENV_HPS: hps,
            train.ENV_TRAIN: str(train_dir),
            train.ENV_TEST: str(test_dir),
            train.ENV_MODEL_DIR: str(job / "model"),
            train.ENV_CHECKPOINT_DIR: str(job / "checkpoints"),
        }
        env.pop(train.ENV_KILL_AFTER, None)
        log(f"training {training.key}: {hps}")
        process = subprocess.Popen(
            [sys.executable, "-m", "models.digits.train"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        running.append((training, process, stamp, digest))
    for training, process, stamp, digest in running:
        try:
            output, _ = process.communicate(timeout=_TRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            process.kill()
            process.communicate()
            raise ModelBuildError(f"training {training.key} timed out") from err
        if process.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-20:])
            raise ModelBuildError(f"training {training.key} failed ({process.returncode}):\n{tail}")
        metrics = json.loads((stamp.parent / "model" / train.METRICS_FILE).read_text())
        log(f"training {training.key}: test accuracy {metrics.get('test_accuracy')}")
        atomic_write_text(stamp, digest + "\n")
    return model_dirs


# -- artifacts -----------------------------------------------------------------------------


def host_target() -> str:
    """The generic ``linux_<arch>`` Neo target of this machine."""
    arch = host_arch()
    try:
        return generic_target(arch)
    except DeviceProfileError as err:
        raise ModelBuildError(f"no linux_* Neo target for host architecture {arch}") from err


def plan_artifacts(spec: ModelSpec, compilers: dict[str, Compiler | None], *, cross: bool,
                   log: Log) -> list[ArtifactRequest]:
    """Which artifacts a model directory gets on this machine, logging what must be skipped."""
    host = host_arch()
    if not spec.all_targets:
        # Bad builds exist to be rolled out to emulated fleets: the host's own target plus
        # a host-architecture build for every emulated board's target.
        return [ArtifactRequest(host_target(), host)] + [
            ArtifactRequest(name, host, emulated=True) for name in DEFAULT_BUILD_TARGETS
            if NEO_TARGETS[name].arch != host]
    requests: list[ArtifactRequest] = []
    for name in DEFAULT_BUILD_TARGETS:
        arch = NEO_TARGETS[name].arch
        if arch == host:
            requests.append(ArtifactRequest(name, arch))
            continue
        if not cross:
            log(f"{spec.dir_name}: skipping {name}-{arch}: cross-compilation disabled")
        elif compilers.get(arch) is None:
            log(f"{spec.dir_name}: skipping {name}-{arch}: no {arch} cross compiler on PATH")
        else:
            requests.append(ArtifactRequest(name, arch))
        requests.append(ArtifactRequest(name, host, emulated=True))
    return requests


def _model_info(spec: ModelSpec, accuracy: float) -> ModelInfo:
    return ModelInfo(
        name=MODEL_NAME,
        version=spec.version,
        variant=spec.variant,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=(1, N_FEATURES))],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=(1, N_CLASSES))],
        accuracy=round(accuracy, 6),
    )


def _build_model_dir(spec: ModelSpec, params: dict[str, np.ndarray],
                     testset: dict[str, np.ndarray], requests: Sequence[ArtifactRequest],
                     compilers: dict[str, Compiler | None], staging: Path,
                     pool: ThreadPoolExecutor) -> None:
    staging.mkdir(parents=True)
    accuracy = train.accuracy(params, testset["x"], testset["y"])
    info = _model_info(spec, accuracy)
    atomic_write_text(staging / MODEL_INFO, json.dumps(info.model_dump(mode="json"), indent=2)
                      + "\n")
    atomic_write(staging / TESTSET, npz_bytes(testset))
    if spec.onnx:
        export_onnx(params, staging / ONNX_FILE)
    futures = []
    for request in requests:
        compiler = compilers[request.arch]
        assert compiler is not None  # plan_artifacts only plans what a compiler exists for
        futures.append(pool.submit(export_neo, params, staging / DLR_DIR / request.dir_name,
                                   request, compiler, fault=spec.fault))
    for future in futures:
        future.result()


def build_all(out_dir: Path, *, cross: bool | None = None, log: Log = print) -> list[Path]:
    """Build (or bring up to date) every reference model directory under ``out_dir``.

    ``cross``: True requires the ARM cross compilers, False builds host code
    only, None cross-compiles where a cross gcc is on PATH. Returns the model
    directories in :data:`MODELS` order. Raises :class:`ModelBuildError`.
    """
    out_dir = out_dir.resolve()
    work = out_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir, testset = _prepare_data(work)
    weight_dirs = _train_all(work, train_dir, test_dir, log)

    host = host_arch()
    archs = {host} | {NEO_TARGETS[name].arch for name in DEFAULT_BUILD_TARGETS}
    compilers = {arch: find_compiler(arch) for arch in sorted(archs)}
    if compilers[host] is None:
        raise ModelBuildError(f"no C compiler for the host ({host}): install gcc")
    missing = sorted(arch for arch, compiler in compilers.items() if compiler is None)
    if cross and missing:
        raise ModelBuildError(f"cross compilers missing for {', '.join(missing)}: install "
                              + " ".join(f"gcc-{arch}" for arch in missing))
    use_cross = cross is not False

    export_digest = _sources_digest("export/*.py", "files.py", "build.py")
    test_digest = _digest(npz_bytes(testset))
    results: list[Path] = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for spec in MODELS:
            target = out_dir / spec.dir_name
            requests = plan_artifacts(spec, compilers, cross=use_cross, log=log)
            weights = load_npz(weight_dirs[spec.training] / train.WEIGHTS_FILE)
            params = permute_classes(weights) if spec.permute_classes else weights
            digest = _digest(
                repr(spec), npz_bytes(params), export_digest, test_digest,
                *(f"{request}|{compilers[request.arch]}" for request in requests),
            )
            stamp = work / "stamps" / spec.dir_name
            results.append(target)
            if _stamp_ok(stamp, digest) and (target / MODEL_INFO).is_file():
                log(f"{spec.dir_name}: up to date")
                continue
            staging = out_dir / f".{spec.dir_name}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                _build_model_dir(spec, params, testset, requests, compilers, staging, pool)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            atomic_write_text(stamp, digest + "\n")
            log(f"{spec.dir_name}: built {len(requests)} DLR artifact(s): "
                + ", ".join(request.dir_name for request in requests))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/models"),
                        help="output directory (default: build/models)")
    parser.add_argument("--cross", action=argparse.BooleanOptionalAction, default=None,
                        help="require (--cross) or skip (--no-cross) ARM cross-compilation; "
                             "default: cross-compile when the cross gcc is installed")
    parser.add_argument("--vision-out", type=Path, default=Path("build/vision"),
                        help="where vision-v1 goes (default: build/vision)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    log: Log = (lambda _message: None) if args.quiet else print
    try:
        built = build_all(args.out, cross=args.cross, log=log)
        build_vision(args.vision_out, log=log)
    except ModelBuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    log(f"{len(built)} model directories in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
