"""``capture pull`` from a folder into a dataset: verification, de-duplication, refusal of
corrupt batches, idempotence and a consistent dataset after a kill mid-pull."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from capture_remote import (
    batch_files,
    batch_id,
    capture_id,
    digit_capture,
    index_lines,
    info_bytes,
    put_folder,
)
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from paths import REPO_ROOT

from agent.cli.main import main
from agent.device.capture.errors import CaptureFormatError
from agent.tools.capture.dataset import CaptureDataset
from agent.tools.capture.errors import CaptureDatasetError, CaptureSourceError
from agent.tools.capture.fetch import fetch_batch, manifest_lines
from agent.tools.capture.pull import pull_captures
from agent.tools.capture.remote import FolderSource, RemoteBatch


def _two_batches(remote: Path) -> None:
    put_folder(remote, batch_files([digit_capture(i, label="7" if i == 1 else None,
                                                  rule="request" if i == 1 else "low_confidence")
                                    for i in range(3)], batch_id=batch_id(1)),
               batch_id=batch_id(1))
    # capture 2 is in both batches (a batch uploaded again under another id)
    put_folder(remote, batch_files([digit_capture(i, thing="cam-2") for i in (2, 3, 4)],
                                   thing="cam-2", batch_id=batch_id(2)),
               thing="cam-2", batch_id=batch_id(2))


def test_pull_merges_verified_batches_with_provenance(tmp_path: Path) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    _two_batches(remote)
    summary = pull_captures(remote, dataset, clock=lambda: 1234.5)
    assert (summary.batches_pulled, summary.captures_new, summary.captures_duplicate) == (2, 5, 1)
    assert summary.new_by_rule == {"low_confidence": 4, "request": 1}
    assert summary.totals is not None and summary.totals.to_dict()["labelled"] == 1
    lines = index_lines(dataset)
    assert [line["capture_id"] for line in lines] == [capture_id(i) for i in range(5)]
    first = lines[1]
    assert (first["batch_id"], first["pulled_at"], first["label"], first["label_source"],
            first["rule"], first["thing"]) == (batch_id(1), 1234.5, "7", "application",
                                               "request", "cam-1")
    assert lines[0]["label"] is None and lines[0]["label_source"] is None
    assert lines[2]["batch_id"] == batch_id(1)  # the first batch that carried it
    for line in lines:  # the files as uploaded
        uploaded = next(remote.glob(f"*/*/{line['file']}")).read_bytes()
        assert (dataset / "captures" / line["file"]).read_bytes() == uploaded
        assert hashlib.sha256(uploaded).hexdigest() == line["sha256"]
    assert sorted(p.name for p in dataset.iterdir()) == [
        ".lock", "batches.jsonl", "captures", "index.jsonl"]
    assert len(list((dataset / "captures").iterdir())) == 5


def test_pulling_again_changes_nothing_and_new_batches_are_added(tmp_path: Path) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    _two_batches(remote)
    pull_captures(remote, dataset)
    before = (dataset / "index.jsonl").read_bytes()
    again = pull_captures(remote, dataset)
    assert (again.batches_already, again.batches_pulled, again.captures_new) == (2, 0, 0)
    assert (dataset / "index.jsonl").read_bytes() == before
    put_folder(remote, batch_files([digit_capture(9)], batch_id=batch_id(3)),
               batch_id=batch_id(3))
    third = pull_captures(remote, dataset)
    assert (third.batches_pulled, third.captures_new) == (1, 1)
    assert [line["capture_id"] for line in index_lines(dataset)][-1] == capture_id(9)


def test_a_batch_without_batch_json_is_not_pulled_until_complete(tmp_path: Path) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    files = batch_files([digit_capture(1)], batch_id=batch_id(1))
    info = files.pop("batch.json")
    put_folder(remote, files, batch_id=batch_id(1))
    assert pull_captures(remote, dataset).batches_listed == 0
    assert index_lines(dataset) == []
    (remote / "cam-1" / batch_id(1) / "batch.json").write_bytes(info)
    assert pull_captures(remote, dataset).captures_new == 1


def _flip(data: bytes) -> bytes:
    return data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:]


def _corrupt(files: dict[str, bytes], how: str) -> str:
    """Break the batch ``how``; returns a part of the reason the pull must give."""
    name = next(n for n in files if n.endswith(".npz"))
    if how == "file edited":
        files[name] = _flip(files[name])
        return "does not have the manifest's sha256"
    if how == "manifest edited":
        files["manifest.jsonl"] = files["manifest.jsonl"].replace(b'"rule": "low_confidence"',
                                                                  b'"rule": "sample"', 1)
        return "manifest.jsonl does not have the digest"
    if how == "file missing":
        del files[name]
        return f"{name} is missing"
    if how == "not a capture":
        files[name] = b"PK\x03\x04 not a zip at all"
        line = json.loads(files["manifest.jsonl"].splitlines()[0])
        lines = files["manifest.jsonl"].splitlines()
        line.update(sha256=hashlib.sha256(files[name]).hexdigest(), bytes=len(files[name]))
        lines[0] = json.dumps(line, sort_keys=True).encode()
        files["manifest.jsonl"] = b"\n".join(lines) + b"\n"
        files["batch.json"] = info_bytes(files, batch_id=batch_id(5))
        return "not a capture file"
    if how == "count wrong":
        info = json.loads(files["batch.json"])
        files["batch.json"] = json.dumps({**info, "count": info["count"] + 1}).encode()
        return "manifest lines"
    assert how == "batch.json of another batch"
    files["batch.json"] = info_bytes(files, batch_id=batch_id(6))
    return "not its folder's"


@pytest.mark.parametrize("how", ["file edited", "manifest edited", "file missing",
                                 "not a capture", "count wrong", "batch.json of another batch"])
def test_a_corrupt_batch_is_refused_and_the_rest_is_merged(tmp_path: Path, how: str) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    files = batch_files([digit_capture(i) for i in (10, 11)], batch_id=batch_id(5))
    reason = _corrupt(files, how)
    put_folder(remote, files, batch_id=batch_id(5))
    put_folder(remote, batch_files([digit_capture(1)], batch_id=batch_id(7)),
               batch_id=batch_id(7))
    summary = pull_captures(remote, dataset)
    assert [r.key for r in summary.refused] == [f"cam-1/{batch_id(5)}"]
    assert reason in summary.refused[0].reason and batch_id(5) in summary.refused[0].reason
    assert (summary.batches_pulled, summary.captures_new) == (1, 1)
    assert [line["capture_id"] for line in index_lines(dataset)] == [capture_id(1)]
    assert sorted(p.name for p in (dataset / "captures").iterdir()) == [f"{capture_id(1)}.npz"]
    assert not (dataset / ".incoming").exists() or not any((dataset / ".incoming").iterdir())
    assert f"cam-1/{batch_id(5)}" not in CaptureDataset.open(dataset).pulled  # tried again


def test_the_cli_prints_the_summary_and_exits_1_when_a_batch_was_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    _two_batches(remote)
    assert main(["capture", "pull", "--from", str(remote), "--out", str(dataset)]) == 0
    text = capsys.readouterr().out
    assert "pulled 2 batches" in text and "5 new, 1 duplicate" in text
    assert "low_confidence 4, request 1" in text and "1 labelled, 4 unlabelled" in text
    files = batch_files([digit_capture(20)], batch_id=batch_id(8))
    _corrupt(files, "file edited")
    put_folder(remote, files, batch_id=batch_id(8))
    assert main(["capture", "pull", "--from", str(remote), "--out", str(dataset),
                 "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["batches_refused"] == 1 and report["refused"][0]["batch"].endswith(batch_id(8))
    assert main(["capture", "list", str(dataset), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["by_rule"] == {"low_confidence": 4, "request": 1}
    assert counts["by_model"] == {"digits-v1": 5} and counts["batches"] == 2
    assert main(["capture", "list", str(dataset)]) == 0
    text = capsys.readouterr().out
    assert "5 captures from 2 batches, 1 labelled, 4 unlabelled" in text
    assert "by rule: low_confidence 4, request 1" in text and "by label: 7 1" in text


def test_a_missing_source_or_a_foreign_out_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CaptureSourceError, match="is not a folder"):
        pull_captures(tmp_path / "nowhere", tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "remote").mkdir()
    with pytest.raises(CaptureDatasetError, match="is not a capture dataset"):
        pull_captures(tmp_path / "remote", foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main(["capture", "list", str(foreign)]) == 2
    assert "CaptureDatasetError" in capsys.readouterr().err


def test_a_malformed_index_names_its_line(tmp_path: Path) -> None:
    line = {"capture_id": capture_id(1), "label": None, "label_source": None}
    (tmp_path / "index.jsonl").write_text(json.dumps(line) + "\n[1]\n")
    with pytest.raises(CaptureDatasetError, match="line 2 is not a JSON object"):
        CaptureDataset.open(tmp_path)
    (tmp_path / "index.jsonl").write_text(json.dumps({**line, "label": "3"}) + "\n")
    with pytest.raises(CaptureDatasetError, match="line 1: label_source None"):
        CaptureDataset.open(tmp_path)


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from agent.tools.capture import dataset
    from agent.tools.capture.pull import pull_captures

    appends = []
    real = dataset._append

    def append(path, data):
        appends.append(path.name)
        if len(appends) == 3:  # the second batch's index lines: half written, then killed
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, data[: len(data) // 2 + 7])
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, data)

    dataset._append = append
    pull_captures(Path(sys.argv[1]), Path(sys.argv[2]))
""")


def test_a_kill_mid_pull_leaves_a_consistent_dataset_and_the_next_pull_completes(
        tmp_path: Path) -> None:
    remote, dataset = tmp_path / "remote", tmp_path / "dataset"
    for n in range(3):
        put_folder(remote, batch_files([digit_capture(10 * n + i) for i in range(4)],
                                       batch_id=batch_id(n)), batch_id=batch_id(n))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run([sys.executable, "-c", _KILLER, str(remote), str(dataset)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (dataset / "index.jsonl").read_bytes().endswith(b"\n")  # torn for real
    # Readers see whole lines only: the first batch and the second's lines written whole,
    # every line with its file; the second batch is not counted as pulled.
    opened = CaptureDataset.open(dataset)
    order = [capture_id(10 * n + i) for n in range(3) for i in range(4)]
    whole = len(opened.entries)
    assert 4 <= whole < 8 and list(opened.entries) == order[:whole]
    assert opened.pulled == {f"cam-1/{batch_id(0)}"}
    for entry in opened.entries.values():
        assert opened.load(entry["capture_id"]).capture_id == entry["capture_id"]
    summary = pull_captures(remote, dataset)
    assert (summary.batches_pulled, summary.captures_new) == (2, 12 - whole)
    assert summary.captures_duplicate == whole - 4
    ids = [line["capture_id"] for line in index_lines(dataset)]
    assert sorted(ids) == sorted(capture_id(10 * n + i) for n in range(3) for i in range(4))
    assert len(ids) == len(set(ids)) == 12
    assert len((dataset / "batches.jsonl").read_text().splitlines()) == 3
    assert not (dataset / ".incoming").exists()


# A pull reads remote bytes: a batch passes verification or is refused with the typed
# error, whatever its batch.json, manifest and files hold.

_BATCH = RemoteBatch(batch_id=batch_id(1), thing="cam-1")
_GOOD = batch_files([digit_capture(1)], batch_id=batch_id(1))


class _Memory:
    description = "memory"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def batches(self) -> list[RemoteBatch]:
        return [_BATCH]

    def read(self, batch: RemoteBatch, name: str, limit: int) -> bytes:
        if name not in self.files:
            raise CaptureFormatError(f"{name} is missing")
        return self.files[name][:limit + 1]


def _mangle(data: bytes, cut: int, extra: bytes) -> bytes:
    return data[:cut] + extra + data[cut + len(extra):]


_PART = st.sampled_from(sorted(_GOOD))
_BATCHES = st.lists(st.tuples(_PART, st.integers(0, 2000), st.binary(max_size=12)),
                    max_size=3)


def _fetch_property(tmp_path: Path, edits: list[tuple[str, int, bytes]],
                    resign: bool) -> None:
    files = dict(_GOOD)
    for name, cut, extra in edits:
        files[name] = _mangle(files[name], cut % (len(files[name]) + 1), extra)
    if resign:  # a batch.json that fits the edited manifest: only the files can betray it
        files["batch.json"] = info_bytes(files, batch_id=batch_id(1))
    try:
        fetched = fetch_batch(_Memory(files), _BATCH, tmp_path / "fuzz")
    except CaptureFormatError:
        return
    assert [line["capture_id"] for line in fetched.lines] == [capture_id(1)]
    assert (tmp_path / "fuzz" / f"{capture_id(1)}.npz").read_bytes() == \
        files[f"{capture_id(1)}.npz"]


@BRIEF
@given(_BATCHES, st.booleans())
def test_fuzz_fetch_batch(tmp_path: Path, edits: list[tuple[str, int, bytes]],
                          resign: bool) -> None:
    _fetch_property(tmp_path, edits, resign)


@pytest.mark.slow
@LONG
@given(_BATCHES, st.booleans())
def test_fuzz_fetch_batch_long(tmp_path: Path, edits: list[tuple[str, int, bytes]],
                               resign: bool) -> None:
    _fetch_property(tmp_path, edits, resign)


def _manifest_property(data: bytes) -> None:
    info = {"count": 1, "bytes": 10, "manifest_sha256": hashlib.sha256(data).hexdigest()}
    try:
        lines = manifest_lines(_BATCH, info, data)
    except CaptureFormatError:
        return
    assert len(lines) == 1 and isinstance(lines[0]["capture_id"], str)


_LINE = json.dumps({"capture_id": capture_id(1), "file": f"{capture_id(1)}.npz",
                    "sha256": "0" * 64, "bytes": 10, "label": None}).encode()
_MANIFESTS = st.one_of(st.binary(max_size=300),
                       st.builds(lambda cut, extra: _LINE[:cut] + extra,
                                 st.integers(0, len(_LINE)), st.binary(max_size=20)),
                       st.text(max_size=200).map(str.encode))


@BRIEF
@given(_MANIFESTS)
def test_fuzz_manifest_lines(data: bytes) -> None:
    _manifest_property(data)


@pytest.mark.slow
@LONG
@given(_MANIFESTS)
def test_fuzz_manifest_lines_long(data: bytes) -> None:
    _manifest_property(data)


def test_pull_from_s3_without_boto3_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert main(["capture", "pull", "--from", "s3://bucket/captures", "--out",
                 str(tmp_path / "dataset")]) == 2
    assert capsys.readouterr().err.strip() == (
        "edge-agent capture pull needs the \"s3\" extra: pip install "
        "'edge-inference-agent[s3]'")
    assert not (tmp_path / "dataset").exists()


def test_a_folder_source_lists_only_safe_complete_batches(tmp_path: Path) -> None:
    put_folder(tmp_path, batch_files([digit_capture(1)], batch_id=batch_id(2)),
               batch_id=batch_id(2))
    (tmp_path / "cam-1" / ".hidden").mkdir()
    (tmp_path / "cam-1" / ".hidden" / "batch.json").write_text("{}")
    (tmp_path / "cam-1" / "open").mkdir()
    assert FolderSource(tmp_path).batches() == [RemoteBatch(batch_id(2), "cam-1")]
