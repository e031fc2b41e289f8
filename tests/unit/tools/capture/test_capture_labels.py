"""``capture label``: operator labels from a CSV file or one at a time; application labels
kept unless overwritten; a bad file names its line and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from capture_remote import batch_files, batch_id, capture_id, digit_capture, index_lines, put_folder
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st

from agent.cli.main import main
from agent.tools.capture.errors import CaptureDatasetError, CaptureLabelError
from agent.tools.capture.labels import apply_labels, read_label_csv
from agent.tools.capture.pull import pull_captures


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Captures 0..4; capture 1 carries the application's label "7"."""
    remote = tmp_path / "remote"
    put_folder(remote, batch_files([digit_capture(i, label="7" if i == 1 else None)
                                    for i in range(5)], batch_id=batch_id(1)),
               batch_id=batch_id(1))
    pull_captures(remote, tmp_path / "dataset")
    return tmp_path / "dataset"


def _labels(dataset: Path) -> dict[str, tuple[str | None, str | None]]:
    return {line["capture_id"]: (line["label"], line["label_source"])
            for line in index_lines(dataset)}


def test_a_csv_sets_operator_labels_and_keeps_the_applications(dataset: Path,
                                                                tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("capture_id,label\n" + "".join(f"{capture_id(i)},{i}\n" for i in range(3))
                   + "\n")
    result = apply_labels(dataset, csv)
    assert (result.changed, result.kept, result.labelled, result.unlabelled) == (2, 1, 3, 2)
    labels = _labels(dataset)
    assert labels[capture_id(0)] == ("0", "operator")
    assert labels[capture_id(1)] == ("7", "application")
    assert labels[capture_id(2)] == ("2", "operator")
    assert labels[capture_id(3)] == (None, None)
    again = apply_labels(dataset, csv)
    assert (again.changed, again.unchanged) == (0, 2)
    forced = apply_labels(dataset, csv, overwrite=True)
    assert forced.changed == 1 and _labels(dataset)[capture_id(1)] == ("1", "operator")


def test_one_label_from_python_and_from_the_cli(dataset: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert apply_labels(dataset, {capture_id(4): " 5 "}).changed == 1
    assert _labels(dataset)[capture_id(4)] == ("5", "operator")
    assert main(["capture", "label", str(dataset), capture_id(3), "8"]) == 0
    assert "1 set" in capsys.readouterr().out
    assert _labels(dataset)[capture_id(3)] == ("8", "operator")
    assert main(["capture", "label", str(dataset), capture_id(1), "2"]) == 0
    assert "1 application labels kept" in capsys.readouterr().out
    assert main(["capture", "label", str(dataset), capture_id(1), "2", "--overwrite"]) == 0
    assert _labels(dataset)[capture_id(1)] == ("2", "operator")
    assert main(["capture", "label", str(dataset)]) == 2
    assert "--csv FILE, or one CAPTURE_ID and its LABEL" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("id,label\n", "line 1: the header is"),
    ("capture_id,label\n{a},1,extra\n", "line 2: 3 columns, not 2"),
    ("capture_id,label\n{a},1\nnot-an-id,1\n", "line 3: 'not-an-id' is not a capture id"),
    ("capture_id,label\n{a},  \n", "line 2: the label is empty"),
    ("capture_id,label\n{a},1\n{a},2\n", "line 3: capture {a} was given another label on line 2"),
    ("capture_id,label\n{a},1\n{z},1\n", "line 3: no capture {z} in"),
    ("", "is empty"),
])
def test_a_bad_label_file_names_its_line_and_changes_nothing(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
        message: str) -> None:
    ids = {"a": capture_id(0), "z": capture_id(99)}
    csv = tmp_path / "labels.csv"
    csv.write_text(text.format(**ids))
    before = (dataset / "index.jsonl").read_bytes()
    expected = message.format(**ids)
    with pytest.raises(CaptureLabelError) as caught:
        apply_labels(dataset, csv)
    assert expected in str(caught.value) and str(csv) in str(caught.value)
    assert main(["capture", "label", str(dataset), "--csv", str(csv)]) == 2
    assert f"CaptureLabelError: {csv}" in capsys.readouterr().err
    assert (dataset / "index.jsonl").read_bytes() == before


def test_an_unknown_id_from_python_is_named(dataset: Path) -> None:
    before = (dataset / "index.jsonl").read_bytes()
    with pytest.raises(CaptureLabelError, match=f"capture {capture_id(42)}: no capture"):
        apply_labels(dataset, {capture_id(0): "1", capture_id(42): "1"})
    assert (dataset / "index.jsonl").read_bytes() == before


def test_labelling_a_folder_that_is_no_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaptureDatasetError, match="no such folder"):
        apply_labels(tmp_path / "nowhere", {capture_id(0): "1"})
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(CaptureDatasetError, match="not a capture dataset"):
        apply_labels(tmp_path, {capture_id(0): "1"})


# The CSV reader reads an operator's file: it returns labels or raises its typed error.

_ROW = st.one_of(st.just(capture_id(1)), st.text(max_size=40))
_CSV = st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(_ROW, st.text(max_size=20)), max_size=8).map(
        lambda rows: "capture_id,label\n" + "".join(f"{a},{b}\n" for a, b in rows)))


def _csv_property(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        rows = read_label_csv(path)
    except CaptureLabelError:
        return
    for capture, (line, label) in rows.items():
        assert len(capture) == 32 and line >= 2 and label == label.strip() and label


@BRIEF
@given(_CSV)
def test_fuzz_read_label_csv(tmp_path: Path, text: str) -> None:
    _csv_property(tmp_path, text)


@pytest.mark.slow
@LONG
@given(_CSV)
def test_fuzz_read_label_csv_long(tmp_path: Path, text: str) -> None:
    _csv_property(tmp_path, text)
