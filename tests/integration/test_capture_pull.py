"""``edge-agent capture pull`` from a real S3-compatible server (moto, on loopback) through
the real CLI process, then ``label``, ``export`` and the digits trainer on the export:
complete batches only, verified, de-duplicated, a corrupt batch refused; the same
captures give the same channel bytes and the same weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from capture_remote import (
    batch_files,
    batch_id,
    capture_id,
    digit_capture,
    index_lines,
    put_folder,
    put_s3,
)
from paths import REPO_ROOT

from agent.cli.main import main
from agent.tools.capture.export import export_dataset
from agent.tools.capture.labels import apply_labels
from agent.tools.capture.pull import pull_captures
from agent.tools.s3.local_server import ACCESS_KEY, REGION, SECRET_KEY, LocalS3Server
from models.digits import train
from models.digits.data import load_split
from models.files import save_npz

PREFIX = "fleet/captures"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    return subprocess.run([sys.executable, "-m", "agent.cli", "capture", *args], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _upload_fleet(client: Any, bucket: str) -> dict[str, Any]:
    """Five complete batches from two devices (one corrupt; one capture uploaded twice)
    and one batch still uploading (no batch.json); what a pull must find."""
    client.create_bucket(Bucket=bucket)
    split = load_split()
    expected: list[str] = []
    labels: dict[str, int] = {}
    n = 0
    for b in range(4):
        thing = f"cam-{b % 2 + 1}"
        captures = []
        for _ in range(8):
            label = int(split.y_test[n])
            captures.append(digit_capture(n, thing=thing, x=split.x_test[n],
                                          label=str(label) if n % 4 == 0 else None))
            expected.append(capture_id(n))
            labels[capture_id(n)] = label
            n += 1
        if b == 3:
            captures.append(digit_capture(0, x=split.x_test[0], label=str(split.y_test[0])))
        put_s3(client, bucket, PREFIX, batch_files(captures, thing=thing, batch_id=batch_id(b)),
               thing=thing, batch_id=batch_id(b))
    corrupt = batch_files([digit_capture(900 + i) for i in range(3)], batch_id=batch_id(10))
    name = next(k for k in corrupt if k.endswith(".npz"))
    corrupt[name] = corrupt[name][:-30] + bytes(30)
    put_s3(client, bucket, PREFIX, corrupt, batch_id=batch_id(10))
    partial = batch_files([digit_capture(950)], batch_id=batch_id(11))
    del partial["batch.json"]
    put_s3(client, bucket, PREFIX, partial, batch_id=batch_id(11))
    return {"ids": expected, "labels": labels, "corrupt": f"cam-1/{batch_id(10)}"}


def _train(channels: Path, captures: Path, job: Path) -> bytes:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SM_")}
    env.pop(train.ENV_KILL_AFTER, None)
    env.update({"PYTHONPATH": str(REPO_ROOT),
                train.ENV_HPS: json.dumps({"seed": 2, "hidden_sizes": [32], "epochs": 4,
                                           "capture_weight": 5}),
                train.ENV_TRAIN: str(channels), train.ENV_CAPTURES: str(captures),
                train.ENV_MODEL_DIR: str(job / "model"),
                train.ENV_CHECKPOINT_DIR: str(job / "checkpoints")})
    done = subprocess.run([sys.executable, "-m", "models.digits.train"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return (job / "model" / train.WEIGHTS_FILE).read_bytes()


def test_pull_label_export_train_from_a_real_s3_server(
        s3_server: LocalS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bucket = "capture-pull-fleet"
    fleet = _upload_fleet(s3_server.client(), bucket)
    source = f"s3://{bucket}/{PREFIX}"
    dataset = tmp_path / "dataset"

    started = time.monotonic()
    pulled = _cli("pull", "--from", source, "--endpoint-url", s3_server.endpoint_url,
                  "--out", str(dataset), "--json")
    assert time.monotonic() - started < 60
    assert pulled.returncode == 1, pulled.stderr  # one batch refused, the rest merged
    report = json.loads(pulled.stdout)
    assert (report["batches_listed"], report["batches_pulled"], report["captures_new"],
            report["captures_duplicate"]) == (5, 4, 32, 1)
    assert [r["batch"] for r in report["refused"]] == [fleet["corrupt"]]
    assert "does not have the manifest's sha256" in report["refused"][0]["reason"]
    assert report["dataset_counts"]["labelled"] == 8
    lines = index_lines(dataset)
    assert sorted(line["capture_id"] for line in lines) == sorted(fleet["ids"])
    assert {line["thing"] for line in lines} == {"cam-1", "cam-2"}
    assert len(list((dataset / "captures").iterdir())) == 32

    # The rest in this process (the same CLI entry point, without a process start each).
    _credentials(monkeypatch)
    assert main(["capture", "pull", "--from", source, "--endpoint-url",
                 s3_server.endpoint_url, "--out", str(dataset), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["batches_already"], report["captures_new"]) == (4, 0)
    assert len(index_lines(dataset)) == 32

    unlabelled = [line["capture_id"] for line in lines if line["label"] is None]
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["capture_id", "label"])
        writer.writerows([cid, fleet["labels"][cid]] for cid in unlabelled)
    assert main(["capture", "label", str(dataset), "--csv", str(labels_csv)]) == 0
    text = capsys.readouterr().out
    assert "24 set" in text and "32 labelled, 0 unlabelled" in text
    assert main(["capture", "list", str(dataset), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["by_label_source"] == {"application": 8, "operator": 24}

    assert main(["capture", "export", str(dataset), "--out", str(tmp_path / "channel")]) == 0
    assert "exported 32 labelled captures" in capsys.readouterr().out
    with np.load(tmp_path / "channel" / "train.npz") as data:
        assert data["x"].shape == (32, 64) and data["x"].dtype == np.float32
        assert data["capture_id"].tolist() == sorted(fleet["ids"])
        assert data["y"].tolist() == [fleet["labels"][c] for c in sorted(fleet["ids"])]

    # The same captures pulled again elsewhere give the same channel and the same weights.
    second = tmp_path / "second"
    assert pull_captures(source, second, client=s3_server.client()).captures_new == 32
    assert apply_labels(second, labels_csv).changed == 24
    export_dataset(second, tmp_path / "channel2")
    assert (tmp_path / "channel2" / "train.npz").read_bytes() == \
        (tmp_path / "channel" / "train.npz").read_bytes()
    split = load_split()
    save_npz(tmp_path / "train" / "train.npz", {"x": split.x_train, "y": split.y_train})
    weights = _train(tmp_path / "train", tmp_path / "channel", tmp_path / "job1")
    assert _train(tmp_path / "train", tmp_path / "channel2", tmp_path / "job2") == weights


def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)


def test_a_missing_bucket_is_named_and_nothing_is_written(
        s3_server: LocalS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _credentials(monkeypatch)
    assert main(["capture", "pull", "--from", "s3://capture-pull-no-such-bucket/x",
                 "--endpoint-url", s3_server.endpoint_url, "--out",
                 str(tmp_path / "dataset")]) == 2
    assert "CaptureSourceError: cannot list s3://capture-pull-no-such-bucket/x: " \
           "NoSuchBucket" in capsys.readouterr().err
    assert not (tmp_path / "dataset").exists()


def test_a_bucket_root_and_a_folder_copy_pull_alike(s3_server: LocalS3Server,
                                                    tmp_path: Path) -> None:
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-pull-root")
    files = batch_files([digit_capture(i, label="1") for i in range(3)], batch_id=batch_id(1))
    put_s3(client, "capture-pull-root", "", files, batch_id=batch_id(1))
    put_folder(tmp_path / "copy", files, batch_id=batch_id(1))
    from_s3 = pull_captures("s3://capture-pull-root", tmp_path / "a", client=client)
    from_folder = pull_captures(tmp_path / "copy", tmp_path / "b")
    assert from_s3.captures_new == from_folder.captures_new == 3
    assert [line["sha256"] for line in index_lines(tmp_path / "a")] == \
        [line["sha256"] for line in index_lines(tmp_path / "b")]


def test_an_endpoint_for_a_folder_source_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "pull", "--from", str(tmp_path), "--endpoint-url",
                 "http://127.0.0.1:1", "--out", str(tmp_path / "d")]) == 2
    assert "--endpoint-url is for an s3:// source only" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_what_a_device_store_uploads_is_pulled_whole(
        s3_server: LocalS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device side's real store (batches sealed on disk) and uploader (to the S3 server)
    feed the pull: every capture the store reported stored arrives in the dataset once."""
    from waits import wait_for

    from agent.device.capture.config import BatchConfig
    from agent.device.capture.s3_destination import S3Destination
    from agent.device.capture.store import CaptureStore
    from agent.device.capture.upload import BatchUploader

    _credentials(monkeypatch)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-pull-device")
    store = CaptureStore(tmp_path / "capture", thing="cam-9", model="digits",
                         budget_bytes=64 * 1024 * 1024, max_per_hour=10_000,
                         max_capture_bytes=1024 * 1024, batch=BatchConfig(max_captures=5))
    stored = []
    for n in range(12):
        capture = digit_capture(n, thing="cam-9", label=str(n % 10) if n % 2 else None)
        assert store.put(capture)
        stored.append(capture.capture_id)
        store.seal_due()
    assert store.seal() is not None
    uploader = BatchUploader(store, S3Destination("capture-pull-device", "captures", "cam-9",
                                                  region=REGION,
                                                  endpoint_url=s3_server.endpoint_url),
                             thing="cam-9", bandwidth_bytes_per_second=0, retry_initial_s=0.05,
                             retry_max_s=0.4)
    uploader.start()
    try:
        wait_for(lambda: not store.batches(), timeout_s=30)
    finally:
        uploader.stop(10)
    summary = pull_captures("s3://capture-pull-device/captures", tmp_path / "dataset",
                            client=client)
    assert not summary.refused and summary.captures_duplicate == 0
    assert sorted(line["capture_id"] for line in index_lines(tmp_path / "dataset")) == \
        sorted(stored)
    assert summary.totals is not None and summary.totals.labelled == 6
