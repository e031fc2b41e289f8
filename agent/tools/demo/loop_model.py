"""v3 of the loop demo: a SageMaker-convention training job on the original training split
plus the field's labelled captures, then the same model directory, export and package
that every reference model gets.

The job is ``models.digits.train`` in a child process configured only through ``SM_*``
variables: ``SM_CHANNEL_TRAIN`` (the original split), ``SM_CHANNEL_CAPTURES`` (the
captures' export, ``train.npz``), ``SM_CHANNEL_TEST`` (the held-out shifted set, for
the accuracy it reports) and ``SM_MODEL_DIR``. The model directory is written by the
builder's own functions (:mod:`models.build`: ``model.json``, ``testset.npz``, the ONNX
export and the host's Neo artifact), and the package is signed as ``digits-v3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ModelBuildError

V3_VERSION = 3
V3_HYPERPARAMETERS: dict[str, Any] = {"seed": 3, "hidden_sizes": [128, 64], "epochs": 30,
                                      "lr": 0.002, "batch_size": 32, "checkpoint_every": 10}
CAPTURES_CHANNEL = "SM_CHANNEL_CAPTURES"
TRAIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TrainedModel:
    weights: Path  # weights.npz (float32, what ships)
    metrics: dict[str, Any]  # the job's metrics.json
    digest: str  # sha256 of weights.npz: the same captures and seed give the same one
    elapsed_s: float


def train_v3(*, train_channel: Path, captures_channel: Path, test_channel: Path | None,
             job_dir: Path, hyperparameters: dict[str, Any] | None = None) -> TrainedModel:
    """Run the training job; raise :class:`ModelBuildError` if it fails."""
    import time

    from models.digits import train

    shutil.rmtree(job_dir, ignore_errors=True)  # no checkpoint of another run is resumed
    model_dir = job_dir / "model"
    root = Path(train.__file__).resolve().parents[2]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [
               os.environ.get("PYTHONPATH")])]),
           train.ENV_HPS: json.dumps(hyperparameters or V3_HYPERPARAMETERS, sort_keys=True),
           train.ENV_TRAIN: str(train_channel), CAPTURES_CHANNEL: str(captures_channel),
           train.ENV_MODEL_DIR: str(model_dir),
           train.ENV_CHECKPOINT_DIR: str(job_dir / "checkpoints")}
    if test_channel is not None:
        env[train.ENV_TEST] = str(test_channel)
    env.pop(train.ENV_KILL_AFTER, None)
    started = time.monotonic()
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([sys.executable, "-m", "models.digits.train"], env=env,
                              text=True, capture_output=True, timeout=TRAIN_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as err:
        raise ModelBuildError(f"training v3 timed out after {TRAIN_TIMEOUT_S:g} s") from err
    (job_dir / "train.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
        raise ModelBuildError(f"training v3 failed ({done.returncode}):\n{tail}")
    weights = model_dir / train.WEIGHTS_FILE
    metrics = json.loads((model_dir / train.METRICS_FILE).read_text())
    return TrainedModel(weights=weights, metrics=metrics,
                        digest=hashlib.sha256(weights.read_bytes()).hexdigest(),
                        elapsed_s=time.monotonic() - started)


def build_v3_dir(weights: Path, testset: dict[str, np.ndarray], out: Path) -> Path:
    """``out/digits-v3``: model.json, testset.npz (``testset``), the ONNX export and the
    host's Neo artifact, written by :mod:`models.build`'s own functions."""
    from agent.device.platform.elf import host_arch
    from models import build
    from models.export.neo import ArtifactRequest, find_compiler
    from models.files import load_npz

    params = load_npz(weights)
    spec = build.ModelSpec(str(V3_VERSION), "v3")
    host = host_arch()
    compiler = find_compiler(host)
    if compiler is None:
        raise ModelBuildError(f"no C compiler for the host ({host}): install gcc")
    requests = [ArtifactRequest(build.host_target(), host)]
    target = out / spec.dir_name
    staging = out / f".{spec.dir_name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        build._build_model_dir(spec, params, testset, requests, {host: compiler}, staging,
                               pool)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def accuracy(model_dir: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy on ``x`` of a model directory's shipped ONNX export (ONNX Runtime,
    one sample at a time, as a device runs it)."""
    import onnxruntime

    from agent.core.model_layout import ONNX_FILE

    session = onnxruntime.InferenceSession(str(model_dir / ONNX_FILE),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = np.asarray(x, np.float32)
    right = sum(int(np.argmax(session.run(None, {name: row[None, :]})[0]) == int(label))
                for row, label in zip(rows, y, strict=True))
    return right / len(rows)


def testset_arrays(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": np.ascontiguousarray(x, np.float32), "y": np.ascontiguousarray(y, np.int64)}
