"""The batch uploader over real batches on disk and a real folder destination: order
(oldest batch first, batch.json last), resume, quarantine, backoff, pause while offline,
stop mid-batch, bandwidth; and the S3 destination's keys and error translation."""

from __future__ import annotations

import itertools
import logging
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from capture_batches import THING, DirBatchStore, check_batch_dir, make_capture, write_batch

from agent.device.capture.config import UploadConfig
from agent.device.capture.destinations import make_destination
from agent.device.capture.errors import CaptureUploadError
from agent.device.capture.folder_destination import FolderDestination
from agent.device.capture.s3_destination import S3Destination, translate
from agent.device.capture.upload import BatchUploader


class Recording:
    """A folder destination that records every call, and fails while ``failing`` > 0."""

    def __init__(self, inner: FolderDestination, clock: Any = time.monotonic) -> None:
        self.inner = inner
        self.description = inner.description
        self.calls: list[tuple[str, str, str]] = []
        self.failing = 0
        self.error = CaptureUploadError("S3 refused: NoSuchBucket", code="NoSuchBucket")
        self.clock = clock
        self.attempts: list[float] = []

    def _maybe_fail(self) -> None:
        self.attempts.append(self.clock())
        if self.failing > 0:
            self.failing -= 1
            raise self.error

    def has_batch(self, batch_id: str) -> bool:
        self.calls.append(("has", batch_id, ""))
        self._maybe_fail()
        return self.inner.has_batch(batch_id)

    def begin_batch(self, batch_id: str) -> None:
        self.inner.begin_batch(batch_id)

    def put(self, batch_id: str, name: str, data: bytes) -> None:
        self.calls.append(("put", batch_id, name))
        self.inner.put(batch_id, name, data)

    def close(self) -> None:
        pass


def _setup(tmp_path: Path, batches: int = 3, per_batch: int = 4, size: int = 256,
           **kwargs: Any) -> tuple[DirBatchStore, Recording, BatchUploader, list[str]]:
    store = DirBatchStore(tmp_path / "capture")
    ids = []
    for b in range(batches):
        ids.append(write_batch(store.root, [make_capture(b * 100 + i, size=size)
                                            for i in range(per_batch)],
                               created=1_700_000_000 + b * 60))
    (tmp_path / "out").mkdir()
    destination = Recording(FolderDestination(tmp_path / "out", "captures", THING),
                            kwargs.get("clock", time.monotonic))
    options: dict[str, Any] = {"thing": THING, "bandwidth_bytes_per_second": 0,
                               "retry_initial_s": 1.0, "retry_max_s": 8.0, **kwargs}
    return store, destination, BatchUploader(store, destination, **options), ids


def test_batches_arrive_oldest_first_with_batch_json_last(tmp_path: Path) -> None:
    store, destination, uploader, ids = _setup(tmp_path)
    assert uploader.run_once() == 3
    puts = [(b, n) for kind, b, n in destination.calls if kind == "put"]
    assert [b for b, _ in puts] == sorted(b for b, _ in puts)  # oldest batch first
    for batch_id in ids:
        names = [n for b, n in puts if b == batch_id]
        assert names[-2:] == ["manifest.jsonl", "batch.json"]
        assert all(n.endswith(".npz") for n in names[:-2]) and len(names) == 6
        remote = tmp_path / "out" / "captures" / THING / batch_id
        assert len(check_batch_dir(remote)) == 4
    assert store.batches() == [] and store.uploaded == ids
    counts = uploader.counts()
    assert counts["batches_uploaded"] == 3 and counts["captures_uploaded"] == 12
    assert counts["upload_failures"] == 0 and counts["backoff_s"] == 0
    assert counts["bytes_uploaded"] == sum(
        p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_a_batch_already_there_is_only_removed_here(tmp_path: Path) -> None:
    store, destination, uploader, ids = _setup(tmp_path, batches=1)
    for path in store.batch_dir(ids[0]).iterdir():
        destination.inner.put(ids[0], path.name, path.read_bytes())
    assert uploader.run_once() == 1
    assert [c for c in destination.calls if c[0] == "put"] == []
    assert store.batches() == []
    assert uploader.counts()["bytes_uploaded"] == 0
    assert uploader.counts()["captures_uploaded"] == 4


def test_a_corrupt_batch_is_quarantined_and_the_others_go(tmp_path: Path,
                                                          caplog: Any) -> None:
    store, destination, uploader, ids = _setup(tmp_path)
    victim = sorted(store.batch_dir(ids[1]).glob("*.npz"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "edge_agent.capture.upload"):
        assert uploader.run_once() == 2
    assert ids[1] in store.quarantined and "sha256" in store.quarantined[ids[1]]
    assert not (tmp_path / "out" / "captures" / THING / ids[1]).exists()
    assert all(c[1] != ids[1] for c in destination.calls if c[0] == "put")
    assert uploader.counts()["quarantined"] == 1
    assert "quarantined" in caplog.text and ids[1] in caplog.text


def test_a_file_changed_after_the_check_is_quarantined(tmp_path: Path) -> None:
    store, _destination, uploader, ids = _setup(tmp_path, batches=1)
    victim = sorted(store.batch_dir(ids[0]).glob("*.npz"))[-1]

    def verify_then_edit(batch_id: str) -> None:
        DirBatchStore.verify_batch(store, batch_id)
        data = victim.read_bytes()
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))

    store.verify_batch = verify_then_edit  # type: ignore[method-assign]
    assert uploader.run_once() == 0
    assert "changed after the batch was checked" in store.quarantined[ids[0]]
    remote = tmp_path / "out" / "captures" / THING / ids[0]
    assert not (remote / "batch.json").exists()


def test_failures_back_off_doubling_with_jitter_then_reset(tmp_path: Path,
                                                           caplog: Any) -> None:
    clock = [0.0]
    store, destination, uploader, _ids = _setup(tmp_path, clock=lambda: clock[0],
                                               rng=random.Random(7))
    destination.failing = 6
    waits = []
    with caplog.at_level(logging.WARNING, "edge_agent.capture.upload"):
        for _ in range(6):
            assert uploader.run_once() == 0
            counts = uploader.counts()
            waits.append(counts["backoff_s"])
            assert counts["last_upload_error"].startswith("NoSuchBucket: ")
            clock[0] += 1.0
    steps = [1, 2, 4, 8, 8, 8]
    for wait, step in zip(waits, steps, strict=True):
        assert 0.8 * step - 1e-6 <= wait <= step, (waits, steps)
    assert len(set(waits)) > 3  # jittered, not a fixed schedule
    assert uploader.counts()["upload_failures"] == 6
    assert caplog.text.count("not uploaded") == 1  # the same failure is logged once a minute
    assert len(store.batches()) == 3  # nothing lost
    assert uploader.run_once() == 3
    assert uploader.counts()["backoff_s"] == 0
    assert uploader.counts()["last_upload_error"].startswith("NoSuchBucket")  # kept


def test_the_thread_waits_out_the_backoff(tmp_path: Path) -> None:
    """On its thread the uploader tries again only after each wait (fake clock)."""
    clock = [0.0]
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            clock[0] += seconds
        time.sleep(0.001)

    store, destination, uploader, _ids = _setup(tmp_path, clock=lambda: clock[0],
                                               sleep=sleep, rng=random.Random(1),
                                               retry_initial_s=2.0, retry_max_s=16.0)
    destination.failing = 5
    uploader.start()
    deadline = time.monotonic() + 10
    while store.batches() and time.monotonic() < deadline:
        time.sleep(0.01)
    uploader.stop(5)
    assert store.batches() == []
    gaps = [b - a for a, b in itertools.pairwise(destination.attempts)][:5]
    for gap, step in zip(gaps, [2, 4, 8, 16, 16], strict=True):
        assert 0.8 * step - 1e-6 <= gap <= step + 1.0 + 1e-6, gaps


def test_offline_pauses_and_loses_nothing(tmp_path: Path) -> None:
    online = [False]
    store, destination, uploader, _ids = _setup(tmp_path, online=lambda: online[0])
    assert uploader.run_once() == 0
    assert destination.calls == [] and uploader.counts()["paused"] is True
    online[0] = True
    assert uploader.run_once() == 3
    assert uploader.counts()["paused"] is False and store.batches() == []


def test_a_refusal_that_no_retry_fixes_waits_the_longest(tmp_path: Path) -> None:
    _store, destination, uploader, _ids = _setup(tmp_path)
    destination.failing = 1
    destination.error = CaptureUploadError("boto3 missing", code="boto3_missing", retry=False)
    assert uploader.run_once() == 0
    assert 0.8 * 8 <= uploader.counts()["backoff_s"] <= 8


def test_stop_mid_batch_keeps_it_and_a_new_uploader_completes_it(tmp_path: Path) -> None:
    # 4 captures of ~40 KB at 100 KB/s: the batch takes over a second
    store, destination, uploader, ids = _setup(tmp_path, batches=1, size=10_000,
                                               bandwidth_bytes_per_second=100_000)
    uploader.start()
    time.sleep(0.4)
    started = time.monotonic()
    uploader.stop(5)
    assert time.monotonic() - started < 1.0  # stop cuts the throttle's wait short
    assert store.batches() and store.uploaded == []
    remote = tmp_path / "out" / "captures" / THING / ids[0]
    assert not (remote / "batch.json").exists()
    second = BatchUploader(store, destination, thing=THING, bandwidth_bytes_per_second=0,
                           retry_initial_s=1, retry_max_s=2)
    assert second.run_once() == 1
    assert len(check_batch_dir(remote)) == 4  # whole, and no stray temporary file


def test_bandwidth_is_held_with_an_injected_clock(tmp_path: Path) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    _store, _destination, uploader, _ids = _setup(
        tmp_path, batches=2, per_batch=8, size=50_000, clock=lambda: clock[0], sleep=sleep,
        bandwidth_bytes_per_second=200_000)
    assert uploader.run_once() == 2
    sent = uploader.counts()["bytes_uploaded"]
    assert sent > 3_000_000
    rate = sent / clock[0]
    assert abs(rate - 200_000) / 200_000 <= 0.10, rate


def test_a_batch_evicted_mid_upload_is_skipped(tmp_path: Path) -> None:
    store, destination, uploader, ids = _setup(tmp_path, batches=2)
    import shutil

    original = destination.inner.put

    def put_then_evict(batch_id: str, name: str, data: bytes) -> None:
        original(batch_id, name, data)
        if batch_id == ids[0] and store.batch_dir(batch_id).exists():
            shutil.rmtree(store.batch_dir(batch_id))

    destination.inner.put = put_then_evict  # type: ignore[method-assign]
    assert uploader.run_once() == 1
    assert uploader.counts()["upload_failures"] == 0 and store.uploaded == [ids[1]]


# -- the destinations --------------------------------------------------------------------


def test_s3_keys_follow_the_layout() -> None:
    s3 = S3Destination("bucket", "/captures/site-a/", THING)
    batch_id = "20260101T000000Z-0123456789ab"
    assert s3.key(batch_id, "batch.json") == f"captures/site-a/{THING}/{batch_id}/batch.json"
    assert S3Destination("b", "", THING).key(batch_id, "manifest.jsonl") == \
        f"{THING}/{batch_id}/manifest.jsonl"
    for bad_batch, bad_file in (("../x", "batch.json"), (batch_id, "../../etc"),
                                (batch_id, "x.txt")):
        with pytest.raises(CaptureUploadError, match="not") as caught:
            s3.key(bad_batch, bad_file)
        assert caught.value.code == "invalid_name"
    with pytest.raises(CaptureUploadError, match="thing name"):
        S3Destination("b", "p", "a/b")
    with pytest.raises(CaptureUploadError, match=r"'\.\.'"):
        FolderDestination("/tmp", "a/../b", THING)


def test_botocore_errors_become_typed_upload_errors() -> None:
    from botocore import exceptions as be

    refused = be.ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"},
                              "ResponseMetadata": {"HTTPStatusCode": 404}}, "PutObject")
    err = translate(refused, "s3://b/k")
    assert err.code == "NoSuchBucket" and "HTTP 404" in str(err) and err.retry
    assert translate(be.EndpointConnectionError(endpoint_url="http://x"), "k").code == \
        "connection"
    assert translate(be.ReadTimeoutError(endpoint_url="http://x"), "k").code == "connection"
    no_keys = translate(be.NoCredentialsError(), "k")
    assert no_keys.code == "no_credentials" and "TokenExchangeService" in str(no_keys)


def test_s3_without_boto3_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    s3 = S3Destination("bucket", "captures", THING)
    with pytest.raises(CaptureUploadError, match=r"s3 extra") as caught:
        s3.has_batch("20260101T000000Z-0123456789ab")
    assert caught.value.code == "boto3_missing" and not caught.value.retry


def test_s3_unreachable_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.tools.brokers.mosquitto import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s3 = S3Destination("bucket", "captures", THING, region="us-east-1",
                       endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(CaptureUploadError, match="cannot reach S3") as caught:
        s3.put("20260101T000000Z-0123456789ab", "batch.json", b"{}")
    assert caught.value.code == "connection"
    assert time.monotonic() - started < 10


def test_folder_refuses_a_missing_or_blocked_folder(tmp_path: Path) -> None:
    batch_id = "20260101T000000Z-0123456789ab"
    missing = FolderDestination(tmp_path / "not-mounted", "captures", THING)
    with pytest.raises(CaptureUploadError, match="does not exist") as caught:
        missing.put(batch_id, "batch.json", b"{}")
    assert caught.value.code == "folder_missing"
    assert not (tmp_path / "not-mounted").exists()  # never created under a mount point
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "captures").write_text("a file where a folder must go")
    blocked = FolderDestination(tmp_path / "site", "captures", THING)
    with pytest.raises(CaptureUploadError, match=r"cannot write batch\.json") as caught:
        blocked.put(batch_id, "batch.json", b"{}")
    assert caught.value.code == "folder_write_failed"


def test_folder_drops_what_a_cut_upload_left(tmp_path: Path) -> None:
    batch_id = "20260101T000000Z-0123456789ab"
    folder = FolderDestination(tmp_path, "", THING)
    folder.put(batch_id, "manifest.jsonl", b"x\n")
    leftover = folder.batch_path(batch_id) / ".batch.json.1234abcd.tmp"
    leftover.write_bytes(b"half")
    assert not folder.has_batch(batch_id)
    folder.begin_batch(batch_id)
    assert not leftover.exists()
    assert (folder.batch_path(batch_id) / "manifest.jsonl").read_bytes() == b"x\n"


def test_make_destination_builds_what_the_config_names(tmp_path: Path) -> None:
    assert make_destination(UploadConfig(), THING) is None
    s3 = make_destination(UploadConfig(kind="s3", bucket="my-bucket", prefix="p",
                                       endpoint_url="http://127.0.0.1:9"), THING)
    assert isinstance(s3, S3Destination) and s3.description == "s3://my-bucket/p"
    assert s3.endpoint_url == "http://127.0.0.1:9"
    folder = make_destination(UploadConfig(kind="folder", folder=tmp_path), THING)
    assert isinstance(folder, FolderDestination)
    assert folder.root == tmp_path / "captures" / THING
