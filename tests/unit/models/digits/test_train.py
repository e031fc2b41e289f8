"""The digits trainer: accuracy, SageMaker conventions, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.core.model_layout import read_model_info
from models.digits import train
from models.digits.data import load_split
from models.files import save_npz

REPO = REPO_ROOT


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("channels")
    split = load_split()
    save_npz(root / "train" / "train.npz", {"x": split.x_train, "y": split.y_train})
    save_npz(root / "test" / "test.npz", {"x": split.x_test, "y": split.y_test})
    return root / "train", root / "test"


def _run_trainer(channels: tuple[Path, Path], job: Path, hps: dict[str, object],
                 kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SM_")}
    env.update({
        "PYTHONPATH": str(REPO),
        train.ENV_HPS: json.dumps(hps),
        train.ENV_TRAIN: str(channels[0]),
        train.ENV_TEST: str(channels[1]),
        train.ENV_MODEL_DIR: str(job / "model"),
        train.ENV_CHECKPOINT_DIR: str(job / "checkpoints"),
    })
    env.pop(train.ENV_KILL_AFTER, None)
    if kill_after is not None:
        env[train.ENV_KILL_AFTER] = str(kill_after)
    return subprocess.run([sys.executable, "-m", "models.digits.train"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["digits-v1", "digits-v2"])
def test_good_versions_reach_95_percent(built_models: Path, name: str) -> None:
    info = read_model_info(built_models / name)
    assert info.accuracy is not None and info.accuracy >= 0.95


def test_sigkill_after_a_checkpoint_then_resume_is_bitwise_identical(
    channels: tuple[Path, Path], tmp_path: Path
) -> None:
    hps = {"seed": 3, "hidden_sizes": [128, 64], "epochs": 20, "checkpoint_every": 4}
    straight = _run_trainer(channels, tmp_path / "straight", hps)
    assert straight.returncode == 0, straight.stderr

    # Checkpoints come at epochs 4, 8, 12, 16; die right after the second.
    killed = _run_trainer(channels, tmp_path / "spot", hps, kill_after=2)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "spot" / "model").exists()
    newest = train.list_checkpoints(tmp_path / "spot" / "checkpoints")[-1]
    assert newest.name == "checkpoint-000008.npz"

    resumed = _run_trainer(channels, tmp_path / "spot", hps)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint-000008.npz (epoch 8)" in resumed.stdout
    for name in (train.WEIGHTS_FILE, train.METRICS_FILE):
        assert (tmp_path / "spot" / "model" / name).read_bytes() == \
            (tmp_path / "straight" / "model" / name).read_bytes()


def test_checkpoints_are_pruned_and_never_half_written(
    channels: tuple[Path, Path], tmp_path: Path
) -> None:
    result = _run_trainer(channels, tmp_path, {"epochs": 12, "checkpoint_every": 2})
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint-000008.npz", "checkpoint-000010.npz"]


def test_a_checkpoint_of_other_hyperparameters_is_refused(
    channels: tuple[Path, Path], tmp_path: Path
) -> None:
    killed = _run_trainer(channels, tmp_path, {"epochs": 6, "checkpoint_every": 2}, kill_after=1)
    assert killed.returncode == -signal.SIGKILL
    refused = _run_trainer(channels, tmp_path, {"epochs": 6, "checkpoint_every": 2, "seed": 9})
    assert refused.returncode == 2
    assert "clear the checkpoint directory" in refused.stderr


def test_hyperparameters_accept_sagemaker_strings() -> None:
    hps = train.HyperParameters.from_mapping(
        {"seed": "4", "hidden_sizes": "96,48", "epochs": "3", "lr": "0.01"}
    )
    assert hps.seed == 4 and hps.hidden_sizes == (96, 48) and hps.epochs == 3 and hps.lr == 0.01


@pytest.mark.parametrize("raw", [{"epoch": 3}, {"epochs": 0}, {"hidden_sizes": "a,b"},
                                 {"hidden_sizes": []}])
def test_bad_hyperparameters_are_rejected(raw: dict[str, object]) -> None:
    with pytest.raises(train.TrainingError):
        train.HyperParameters.from_mapping(raw)


def test_missing_channel_is_a_clear_failure(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SM_")}
    env["PYTHONPATH"] = str(REPO)
    env[train.ENV_MODEL_DIR] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "models.digits.train"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert train.ENV_TRAIN in result.stderr
