"""``edge-agent run`` on user models: random inputs when the model has no test set (with a
note), a two-input test set replayed with and without labels, accuracy only with labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from foreign_neo import fusion_reference
from model_dirs import fusion_model_dir

from agent.cli.main import main

SAMPLES = 5


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["run", *args, "--duration", "30", "--json"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else {}, captured.err


def _fusion_testset(model: Path, *, labels: bool) -> list[int]:
    """A two-input test set; labels (when written) are right for the first three samples
    and wrong for the rest; the right answers are returned."""
    rng = np.random.default_rng(5)
    frames = rng.standard_normal((SAMPLES, 6)).astype(np.float32)
    counts = rng.integers(0, 5, size=(SAMPLES, 3)).astype(np.int32)
    answers = [int(fusion_reference(frames[i], counts[i])["Identity:0"].argmax())
               for i in range(SAMPLES)]
    arrays = {"sensor_frame": frames, "event_counts": counts}
    if labels:
        arrays["y"] = np.array([a if i < 3 else (a + 1) % 4 for i, a in enumerate(answers)])
    np.savez(model / "testset.npz", **arrays)  # type: ignore[arg-type]
    return answers


def test_a_model_without_a_test_set_runs_on_random_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    code, summary, err = _run(capsys, "--model", str(model), "--count", "40")
    assert code == 0, err
    assert summary["source"] == "random" and summary["inferences"] == 40
    assert summary["accuracy"] is None and summary["checked"] == 0
    assert "note: the model has no test set (testset.npz): running on random inputs" in err


def test_source_testset_without_one_stays_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    code, _, err = _run(capsys, "--model", str(model), "--source", "testset", "--count", "1")
    assert code == 2
    assert err.strip() == ("edge-agent: ConfigError: this model has no test set "
                           "(testset.npz); use --source random")


def test_labelled_two_input_test_set_reports_accuracy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    _fusion_testset(model, labels=True)
    code, summary, err = _run(capsys, "--model", str(model), "--count", str(2 * SAMPLES))
    assert code == 0, err
    assert summary["source"] == "testset" and summary["checked"] == 2 * SAMPLES
    assert summary["accuracy"] == pytest.approx(3 / 5)  # by the labels written above
    assert "note:" not in err


def test_unlabelled_two_input_test_set_reports_no_accuracy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion", onnx=True)
    _fusion_testset(model, labels=False)
    for backend in ("dlr", "onnx"):
        code, summary, err = _run(capsys, "--model", str(model), "--backend", backend,
                                  "--count", "12")
        assert code == 0, err
        assert (summary["source"], summary["inferences"], summary["errors"]) == (
            "testset", 12, 0)
        assert summary["accuracy"] is None and summary["checked"] == 0


def test_an_archive_is_refused_with_what_to_do_instead(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from foreign_neo import neo_tarball

    archive = neo_tarball(tmp_path, "fusion", "ml_c5")
    code = main(["run", "--model", str(archive), "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "is an archive" in err and "edge-agent models import" in err, err
    assert "edge-agent predict --model PACKAGE" in err, err
