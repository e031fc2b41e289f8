"""Train the digits MLP the way a SageMaker (managed spot) training job runs it.

The container conventions are honoured so that the same script runs as a
SageMaker training job, under the builder, or by hand::

    SM_HPS                 JSON hyperparameters (see :class:`HyperParameters`)
    SM_CHANNEL_TRAIN       directory holding ``train.npz`` (``x`` float32 [N, 64], ``y`` int [N])
    SM_CHANNEL_TEST        optional directory holding ``test.npz``, for the reported accuracy
    SM_CHANNEL_CAPTURES    optional directory holding ``capture export``'s ``train.npz``: field
                           captures added ``capture_weight`` times each (models.digits.captures)
    SM_MODEL_DIR           where ``weights.npz`` and ``metrics.json`` are written
    SM_CHECKPOINT_DIR      checkpoints (default ``/opt/ml/checkpoints``, SageMaker's
                           ``checkpoint_local_path``, which it syncs to S3 and restores)

A spot instance can be reclaimed at any moment, so a checkpoint is written
every ``checkpoint_every`` epochs and a restarted job resumes from the newest
one. A checkpoint holds everything the remaining epochs depend on (weights,
Adam moments and step, the generator's bit state, the epoch), and the maths is
single-threaded float64, so an interrupted-and-resumed job ends with exactly
the bytes an uninterrupted one does.

``EDGE_TRAIN_KILL_AFTER_CHECKPOINT=k`` makes the process SIGKILL itself right
after writing its k-th checkpoint, which is how tests reproduce a reclaimed
instance at a known point.

Run as ``python -m models.digits.train``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.durable import atomic_write_text
from models.digits.captures import CapturesChannelError, with_captures
from models.files import load_npz, save_npz

ENV_HPS = "SM_HPS"
ENV_TRAIN = "SM_CHANNEL_TRAIN"
ENV_TEST = "SM_CHANNEL_TEST"
ENV_CAPTURES = "SM_CHANNEL_CAPTURES"
ENV_MODEL_DIR = "SM_MODEL_DIR"
ENV_CHECKPOINT_DIR = "SM_CHECKPOINT_DIR"
ENV_KILL_AFTER = "EDGE_TRAIN_KILL_AFTER_CHECKPOINT"
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"

WEIGHTS_FILE = "weights.npz"
METRICS_FILE = "metrics.json"
_CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINTS_KEPT = 2

Params = dict[str, np.ndarray]


class TrainingError(Exception):
    """The job cannot run as configured (bad hyperparameters, missing data, foreign checkpoint)."""


@dataclass(frozen=True)
class HyperParameters:
    """What ``SM_HPS`` may set. SageMaker may pass every value as a string; both are accepted."""

    seed: int = 0
    hidden_sizes: tuple[int, ...] = (128, 64)
    epochs: int = 30
    lr: float = 0.002
    batch_size: int = 32
    checkpoint_every: int = 5
    capture_weight: int = 1  # times each row of the captures channel is used

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> HyperParameters:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            # A misspelt hyperparameter silently falling back to its default wastes a job.
            raise TrainingError(f"unknown hyperparameters {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        try:
            for key, value in raw.items():
                if key == "hidden_sizes":
                    items = value.split(",") if isinstance(value, str) else value
                    values[key] = tuple(int(item) for item in items)
                elif key == "lr":
                    values[key] = float(value)
                else:
                    values[key] = int(value)
        except (TypeError, ValueError) as err:
            raise TrainingError(f"bad hyperparameter value: {err}") from err
        hps = cls(**values)
        if (hps.epochs < 1 or hps.batch_size < 1 or hps.checkpoint_every < 1 or hps.lr <= 0
                or hps.capture_weight < 1):
            raise TrainingError(f"hyperparameters out of range: {hps}")
        if not hps.hidden_sizes or min(hps.hidden_sizes) < 1:
            raise TrainingError(f"hidden_sizes must be positive: {hps.hidden_sizes}")
        return hps

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data


@dataclass
class TrainState:
    """Everything the remaining epochs depend on; a checkpoint is exactly this."""

    params: Params
    adam_m: Params
    adam_v: Params
    adam_step: int
    epoch: int  # epochs completed
    checkpoints_written: int
    rng: np.random.Generator


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    # A multi-threaded BLAS may split a reduction differently from run to run;
    # resumed and uninterrupted jobs must agree to the last bit.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield


def init_state(hps: HyperParameters, n_features: int, n_classes: int) -> TrainState:
    rng = np.random.default_rng(hps.seed)
    sizes = [n_features, *hps.hidden_sizes, n_classes]
    params: Params = {}
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        # He initialisation suits the ReLU layers; the bias starts at zero.
        params[f"w{layer}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        params[f"b{layer}"] = np.zeros(fan_out)
    zeros = {name: np.zeros_like(value) for name, value in params.items()}
    return TrainState(
        params=params,
        adam_m=zeros,
        adam_v={name: value.copy() for name, value in zeros.items()},
        adam_step=0,
        epoch=0,
        checkpoints_written=0,
        rng=rng,
    )


def num_layers(params: Mapping[str, np.ndarray]) -> int:
    return sum(1 for name in params if name.startswith("w"))


def forward(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities; works in the dtype of ``params`` (float32 for shipped weights)."""
    hidden = x
    last = num_layers(params) - 1
    for layer in range(last):
        hidden = np.maximum(hidden @ params[f"w{layer}"] + params[f"b{layer}"], 0)
    logits = hidden @ params[f"w{last}"] + params[f"b{last}"]
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


def _gradients(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    last = num_layers(params) - 1
    activations = [x]
    for layer in range(last):
        activations.append(
            np.maximum(activations[-1] @ params[f"w{layer}"] + params[f"b{layer}"], 0.0)
        )
    logits = activations[-1] @ params[f"w{last}"] + params[f"b{last}"]
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = float(-log_probs[rows, y].mean())
    delta = np.exp(log_probs)
    delta[rows, y] -= 1.0
    delta /= len(y)
    grads: Params = {}
    for layer in range(last, -1, -1):
        grads[f"w{layer}"] = activations[layer].T @ delta
        grads[f"b{layer}"] = delta.sum(axis=0)
        if layer:
            delta = (delta @ params[f"w{layer}"].T) * (activations[layer] > 0)
    return loss, grads


def _adam_update(state: TrainState, grads: Params, lr: float) -> None:
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    state.adam_step += 1
    correction1 = 1.0 - beta1**state.adam_step
    correction2 = 1.0 - beta2**state.adam_step
    for name, grad in grads.items():
        m = state.adam_m[name]
        v = state.adam_v[name]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        state.params[name] -= lr * (m / correction1) / (np.sqrt(v / correction2) + eps)


def train_epoch(state: TrainState, hps: HyperParameters, x: np.ndarray, y: np.ndarray) -> float:
    order = state.rng.permutation(len(x))
    losses = []
    for start in range(0, len(x), hps.batch_size):
        batch = order[start : start + hps.batch_size]
        loss, grads = _gradients(state.params, x[batch], y[batch])
        _adam_update(state, grads, hps.lr)
        losses.append(loss)
    state.epoch += 1
    return float(np.mean(losses))


# -- checkpoints ---------------------------------------------------------------------------


def _checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"{_CHECKPOINT_PREFIX}{epoch:06d}.npz"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first (temporary files of a killed write excluded)."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.glob(f"{_CHECKPOINT_PREFIX}*.npz")
        if path.name[len(_CHECKPOINT_PREFIX) : -len(".npz")].isdigit()
    )


def save_checkpoint(directory: Path, state: TrainState, hps: HyperParameters,
                    captures: str = "") -> Path:
    state.checkpoints_written += 1
    meta = {
        "hyperparameters": hps.to_json(),
        "captures": captures,
        "epoch": state.epoch,
        "adam_step": state.adam_step,
        "checkpoints_written": state.checkpoints_written,
        "rng": state.rng.bit_generator.state,
    }
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for prefix, group in (("param", state.params), ("adam_m", state.adam_m),
                          ("adam_v", state.adam_v)):
        arrays.update({f"{prefix}.{name}": value for name, value in group.items()})
    path = _checkpoint_path(directory, state.epoch)
    save_npz(path, arrays)
    for stale in list_checkpoints(directory)[:-_CHECKPOINTS_KEPT]:
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, hps: HyperParameters, captures: str = "") -> TrainState:
    arrays = load_npz(path)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if meta.get("captures", "") != captures:
        raise TrainingError(f"{path} was trained on another captures channel; clear the "
                            f"checkpoint directory")
    if meta["hyperparameters"] != hps.to_json():
        # Resuming another job's weights under these settings would silently train a
        # model nobody asked for.
        raise TrainingError(
            f"{path} was written with hyperparameters {meta['hyperparameters']}, "
            f"this job has {hps.to_json()}; clear the checkpoint directory or match them"
        )
    groups: dict[str, Params] = {"param": {}, "adam_m": {}, "adam_v": {}}
    for key, value in arrays.items():
        prefix, name = key.split(".", 1)
        groups[prefix][name] = value
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    return TrainState(
        params=groups["param"],
        adam_m=groups["adam_m"],
        adam_v=groups["adam_v"],
        adam_step=int(meta["adam_step"]),
        epoch=int(meta["epoch"]),
        checkpoints_written=int(meta["checkpoints_written"]),
        rng=rng,
    )


# -- the job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPaths:
    train_dir: Path
    test_dir: Path | None
    model_dir: Path
    checkpoint_dir: Path
    captures_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobPaths:
        missing = [name for name in (ENV_TRAIN, ENV_MODEL_DIR) if not env.get(name)]
        if missing:
            raise TrainingError(f"environment variables not set: {', '.join(missing)}")
        test, captures = env.get(ENV_TEST), env.get(ENV_CAPTURES)
        return cls(
            train_dir=Path(env[ENV_TRAIN]),
            test_dir=Path(test) if test else None,
            model_dir=Path(env[ENV_MODEL_DIR]),
            checkpoint_dir=Path(env.get(ENV_CHECKPOINT_DIR) or DEFAULT_CHECKPOINT_DIR),
            captures_dir=Path(captures) if captures else None,
        )


def _load_split(directory: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = directory / f"{name}.npz"
    try:
        data = load_npz(path)
        return data["x"].astype(np.float64), data["y"].astype(np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise TrainingError(f"cannot read {path}: {err}") from err


def _resume(paths: JobPaths, hps: HyperParameters, log: Any,
            captures: str) -> TrainState | None:
    for path in reversed(list_checkpoints(paths.checkpoint_dir)):
        try:
            state = load_checkpoint(path, hps, captures)
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
            log(f"skipping unreadable checkpoint {path.name}: {err}")
            continue
        log(f"resuming from {path.name} (epoch {state.epoch})")
        return state
    return None


def accuracy(params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(params, x).argmax(axis=1) == y).mean())


def run_job(hps: HyperParameters, paths: JobPaths, *, kill_after: int | None = None,
            log: Any = print) -> dict[str, Any]:
    """Train (or finish training) and write the model; returns the metrics written."""
    x, y = _load_split(paths.train_dir, "train")
    n_classes = int(y.max()) + 1
    try:
        x, y, captures = with_captures(x, y, paths.captures_dir, hps.capture_weight)
    except CapturesChannelError as err:
        raise TrainingError(str(err)) from err
    with _single_threaded_blas():
        state = _resume(paths, hps, log, captures) or init_state(hps, x.shape[1], n_classes)
        loss = float("nan")
        while state.epoch < hps.epochs:
            loss = train_epoch(state, hps, x, y)
            if state.epoch % hps.checkpoint_every == 0 and state.epoch < hps.epochs:
                written = save_checkpoint(paths.checkpoint_dir, state, hps, captures)
                log(f"epoch {state.epoch}: loss {loss:.4f}, checkpoint {written.name}")
                if kill_after is not None and state.checkpoints_written == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        shipped = {name: value.astype(np.float32) for name, value in state.params.items()}
        metrics: dict[str, Any] = {
            "hyperparameters": hps.to_json(),
            "epochs": state.epoch,
            "final_epoch_loss": None if np.isnan(loss) else round(loss, 6),
            "train_accuracy": accuracy(shipped, x.astype(np.float32), y),
        }
        if paths.test_dir is not None:
            x_test, y_test = _load_split(paths.test_dir, "test")
            metrics["test_accuracy"] = accuracy(shipped, x_test.astype(np.float32), y_test)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    save_npz(paths.model_dir / WEIGHTS_FILE, shipped)
    atomic_write_text(paths.model_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    log(f"done: {json.dumps(metrics)}")
    return metrics


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        hps = HyperParameters.from_mapping(json.loads(env.get(ENV_HPS) or "{}"))
        paths = JobPaths.from_env(env)
        kill = env.get(ENV_KILL_AFTER)
        run_job(hps, paths, kill_after=int(kill) if kill else None)
    except (TrainingError, json.JSONDecodeError) as err:
        print(f"training failed: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
