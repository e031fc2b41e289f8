"""``capture export``: the labelled captures as ``train.npz`` (x float32 [N, 64], y int64,
capture_id), sorted by capture id, the same bytes every time; typed errors name the
capture at fault."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from capture_remote import batch_files, batch_id, capture_id, digit_capture, put_folder

from agent.cli.main import main
from agent.device.capture.record import Capture
from agent.tools.capture.errors import CaptureDatasetError, CaptureExportError
from agent.tools.capture.export import export_dataset
from agent.tools.capture.labels import apply_labels
from agent.tools.capture.pull import pull_captures


def _dataset(tmp_path: Path, captures: list[Capture], *, name: str = "dataset",
             batches: int = 1) -> Path:
    remote = tmp_path / f"{name}-remote"
    for n in range(batches):
        part = captures[n::batches]
        put_folder(remote, batch_files(part, batch_id=batch_id(n)), batch_id=batch_id(n))
    pull_captures(remote, tmp_path / name)
    return tmp_path / name


def _rows(n: int) -> np.ndarray:
    return np.arange(64, dtype=np.float32) / 64 + n


def test_export_writes_the_labelled_captures_sorted_by_id(tmp_path: Path) -> None:
    captures = [digit_capture(n, x=_rows(n), label=str(n % 10) if n % 3 else None)
                for n in (12, 3, 7, 9, 1, 4)]
    dataset = _dataset(tmp_path, captures)
    apply_labels(dataset, {capture_id(9): "2"})
    result = export_dataset(dataset, tmp_path / "channel")
    with np.load(tmp_path / "channel" / "train.npz", allow_pickle=False) as data:
        x, y, ids = data["x"], data["y"], data["capture_id"]
    labelled = [1, 4, 7, 9]  # 3 and 12 have no label
    assert ids.tolist() == [capture_id(n) for n in labelled]
    assert x.dtype == np.float32 and x.shape == (4, 64)
    assert np.array_equal(x, np.stack([_rows(n) for n in labelled]))
    assert y.dtype == np.int64 and y.tolist() == [1, 4, 7, 2]
    assert (result.rows, result.unlabelled, result.input_name, result.row_shape) == (
        4, 2, "input", (64,))
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()


def test_the_same_captures_export_the_same_bytes_whatever_the_pull_order(
        tmp_path: Path) -> None:
    captures = [digit_capture(n, label=str(n % 10)) for n in range(10)]
    one = _dataset(tmp_path, captures, name="one", batches=1)
    other = _dataset(tmp_path, captures[::-1], name="other", batches=3)
    first = export_dataset(one, tmp_path / "a").path.read_bytes()
    assert export_dataset(one, tmp_path / "b").path.read_bytes() == first
    assert export_dataset(other, tmp_path / "c").path.read_bytes() == first


def test_keep_shape_and_a_named_input(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, [digit_capture(n, label="1") for n in range(3)])
    kept = export_dataset(dataset, tmp_path / "kept", input_name="input", flatten=False)
    assert kept.row_shape == (64,)  # the leading batch dimension of 1 dropped
    with pytest.raises(CaptureExportError, match=f"capture {capture_id(0)} has no input "
                                                 f"'pixels' \\(it has input\\)"):
        export_dataset(dataset, tmp_path / "named", input_name="pixels")
    assert not (tmp_path / "named").exists()


@pytest.mark.parametrize("label", ["cat", "2.0", "1_0", "\uff13", "12345678901234567890"])
def test_a_label_that_is_no_integer_names_the_capture(tmp_path: Path, label: str) -> None:
    dataset = _dataset(tmp_path, [digit_capture(1, label="3"), digit_capture(2, label=label)])
    with pytest.raises(CaptureExportError, match=f"capture {capture_id(2)}: label "
                                                 f"{label!r} is not an integer"):
        export_dataset(dataset, tmp_path / "channel")
    assert not (tmp_path / "channel" / "train.npz").exists()


def test_no_labelled_capture_or_inputs_of_another_shape_are_refused(tmp_path: Path) -> None:
    unlabelled = _dataset(tmp_path, [digit_capture(1)], name="unlabelled")
    with pytest.raises(CaptureExportError, match="has no labelled capture"):
        export_dataset(unlabelled, tmp_path / "out")
    odd = Capture(thing="cam-1", model="digits", rule="request",
                  inputs={"input": np.zeros((1, 32), np.float32)}, outputs={},
                  variants={"blue": "1"}, served_by="blue", frame_id=1, time=1.0, label="4",
                  capture_id=capture_id(50))
    mixed = _dataset(tmp_path, [digit_capture(1, label="1"), odd], name="mixed")
    with pytest.raises(CaptureExportError, match=f"capture {capture_id(50)}: input 'input' is "
                                                 r"\[1, 32\], the rows before are \[64\]"):
        export_dataset(mixed, tmp_path / "out")


def test_a_capture_file_edited_in_the_dataset_is_refused(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, [digit_capture(1, label="1")])
    path = dataset / "captures" / f"{capture_id(1)}.npz"
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureDatasetError, match="does not have the digest the index names"):
        export_dataset(dataset, tmp_path / "out")


def test_the_cli_exports_and_names_errors(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    dataset = _dataset(tmp_path, [digit_capture(n, label=str(n)) for n in range(3)])
    assert main(["capture", "export", str(dataset), "--out", str(tmp_path / "ch"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 3 and report["row_shape"] == [64]
    assert report["by_label"] == {"0": 1, "1": 1, "2": 1}
    assert main(["capture", "export", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "ch")]) == 2
    assert "CaptureDatasetError" in capsys.readouterr().err
