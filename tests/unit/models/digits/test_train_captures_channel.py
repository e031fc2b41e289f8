"""The digits trainer's captures channel (``SM_CHANNEL_CAPTURES``): the export of ``capture
export`` appended ``capture_weight`` times; deterministic (same captures, same seed, same
bytes, also across a SIGKILL and resume); rows that do not fit are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from capture_remote import batch_files, batch_id, digit_capture, put_folder
from paths import REPO_ROOT

from agent.tools.capture.export import export_dataset
from agent.tools.capture.pull import pull_captures
from models.digits import train
from models.digits.captures import with_captures
from models.digits.data import load_split
from models.files import save_npz

HPS = {"seed": 5, "hidden_sizes": [32], "epochs": 6, "checkpoint_every": 2,
       "capture_weight": 3}


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/test channels of the digits split, and a captures channel made the way an
    operator makes one: shifted test digits uploaded, pulled, exported."""
    root = tmp_path_factory.mktemp("channels")
    split = load_split()
    save_npz(root / "train" / "train.npz", {"x": split.x_train, "y": split.y_train})
    save_npz(root / "test" / "test.npz", {"x": split.x_test, "y": split.y_test})
    shifted = np.roll(split.x_test[:60].reshape(-1, 8, 8), 2, axis=2).reshape(-1, 64)
    captures = [digit_capture(n, x=row, label=str(int(label)))
                for n, (row, label) in enumerate(zip(shifted, split.y_test[:60], strict=True))]
    put_folder(root / "remote", batch_files(captures, batch_id=batch_id(1)),
               batch_id=batch_id(1))
    pull_captures(root / "remote", root / "dataset")
    export_dataset(root / "dataset", root / "captures")
    return {"train": root / "train", "test": root / "test", "captures": root / "captures"}


def _run(channels: dict[str, Path], job: Path, hps: dict[str, object], *,
         captures: Path | None = None,
         kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SM_")}
    env.pop(train.ENV_KILL_AFTER, None)
    env.update({"PYTHONPATH": str(REPO_ROOT), train.ENV_HPS: json.dumps(hps),
                train.ENV_TRAIN: str(channels["train"]), train.ENV_TEST: str(channels["test"]),
                train.ENV_MODEL_DIR: str(job / "model"),
                train.ENV_CHECKPOINT_DIR: str(job / "checkpoints")})
    if captures is not None:
        env[train.ENV_CAPTURES] = str(captures)
    if kill_after is not None:
        env[train.ENV_KILL_AFTER] = str(kill_after)
    return subprocess.run([sys.executable, "-m", "models.digits.train"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def _weights(job: Path) -> bytes:
    return (job / "model" / train.WEIGHTS_FILE).read_bytes()


def test_same_captures_same_seed_same_weights_also_across_a_kill(
        channels: dict[str, Path], tmp_path: Path) -> None:
    first = _run(channels, tmp_path / "first", HPS, captures=channels["captures"])
    assert first.returncode == 0, first.stderr
    second = _run(channels, tmp_path / "second", HPS, captures=channels["captures"])
    assert second.returncode == 0, second.stderr
    assert _weights(tmp_path / "first") == _weights(tmp_path / "second")

    killed = _run(channels, tmp_path / "spot", HPS, captures=channels["captures"],
                  kill_after=1)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(channels, tmp_path / "spot", HPS, captures=channels["captures"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint-000002.npz (epoch 2)" in resumed.stdout
    assert _weights(tmp_path / "spot") == _weights(tmp_path / "first")

    plain = _run(channels, tmp_path / "plain", HPS)
    assert plain.returncode == 0, plain.stderr
    assert _weights(tmp_path / "plain") != _weights(tmp_path / "first")
    metrics = json.loads((tmp_path / "first" / "model" / train.METRICS_FILE).read_text())
    assert metrics["hyperparameters"]["capture_weight"] == 3


def test_the_captures_weigh_in_the_training_set(channels: dict[str, Path]) -> None:
    x, y = np.zeros((5, 64)), np.array([0, 9, 1, 2, 3])
    merged_x, merged_y, digest = with_captures(x, y, channels["captures"], 3)
    with np.load(channels["captures"] / "train.npz") as data:
        rows, labels = data["x"], data["y"]
    assert merged_x.shape == (5 + 3 * len(rows), 64) and len(digest) == 64
    assert np.array_equal(merged_x[5:8], np.repeat(rows[:1].astype(np.float64), 3, axis=0))
    assert merged_y[5:].tolist() == np.repeat(labels, 3).tolist()
    same_x, same_y, none = with_captures(x, y, None, 3)
    assert same_x is x and same_y is y and none == ""


def test_a_checkpoint_of_other_captures_is_not_resumed(channels: dict[str, Path],
                                                       tmp_path: Path) -> None:
    killed = _run(channels, tmp_path / "job", HPS, captures=channels["captures"], kill_after=1)
    assert killed.returncode == -signal.SIGKILL
    other = _run(channels, tmp_path / "job", HPS)  # the channel left out
    assert other.returncode == 2
    assert "trained on another captures channel" in other.stderr


def _job(channels: dict[str, Path], tmp_path: Path, captures: Path) -> train.JobPaths:
    return train.JobPaths(train_dir=channels["train"], test_dir=None,
                          model_dir=tmp_path / "model", checkpoint_dir=tmp_path / "ckpt",
                          captures_dir=captures)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.zeros((2, 32), np.float32), "y": np.zeros(2, np.int64)}, "have 64 features"),
    ({"x": np.zeros((2, 64), np.float32), "y": np.array([1, 12])}, "has label 12, outside "
                                                                    "the classes 0..9"),
    ({"x": np.zeros((2, 64), np.float32), "y": np.zeros(2, np.float32)}, "not integer labels"),
    ({"x": np.zeros((2, 64), np.float32)}, "cannot read the captures channel"),
])
def test_a_channel_that_does_not_fit_is_refused(channels: dict[str, Path], tmp_path: Path,
                                                arrays: dict[str, np.ndarray],
                                                message: str) -> None:
    save_npz(tmp_path / "bad" / "train.npz", arrays)
    hps = train.HyperParameters.from_mapping({"epochs": 1})
    with pytest.raises(train.TrainingError, match=message):
        train.run_job(hps, _job(channels, tmp_path, tmp_path / "bad"), log=lambda _: None)
    assert not (tmp_path / "model").exists()


def test_capture_weight_must_be_at_least_one() -> None:
    assert train.HyperParameters.from_mapping({"capture_weight": "4"}).capture_weight == 4
    with pytest.raises(train.TrainingError, match="out of range"):
        train.HyperParameters.from_mapping({"capture_weight": 0})
