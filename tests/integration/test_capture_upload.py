"""Capture batches leave the device through the real uploader, a real capture store and a
real S3-compatible server on loopback (moto's standalone server, over boto3): offline then
online, a bucket that refuses (no bucket, wrong credentials), a corrupt batch, SIGKILL mid
upload, the Token Exchange Service's credentials, and the folder destination."""

from __future__ import annotations

import http.server
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capture_batches import THING, arrived_ids, bucket_batches, check_batch_dir, make_capture
from capture_upload_child import open_store
from paths import REPO_ROOT
from waits import wait_for

from agent.device.capture.s3_destination import S3Destination
from agent.device.capture.store import CaptureStore
from agent.device.capture.upload import BatchUploader
from agent.tools.s3.local_server import ACCESS_KEY, REGION, SECRET_KEY, LocalS3Server

CHILD = REPO_ROOT / "tests" / "helpers" / "capture_upload_child.py"
PREFIX = "captures"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """boto3's default credential chain, isolated: only the environment variables set
    here (no profile files, no instance metadata, no container credentials)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return monkeypatch


def fill(store: CaptureStore, batches: int, per_batch: int, size: int = 256,
         start: int = 0) -> list[str]:
    """Store and seal ``batches`` batches; the capture ids the store reported stored."""
    ids = []
    for b in range(batches):
        for i in range(per_batch):
            capture = make_capture(start + b * 1000 + i, size=size)
            assert store.put(capture), "the store refused a capture"
            ids.append(capture.capture_id)
        assert store.seal() is not None
    return ids


def s3_destination(s3: LocalS3Server, bucket: str) -> S3Destination:
    return S3Destination(bucket, PREFIX, THING, region=REGION, endpoint_url=s3.endpoint_url)


def uploader_for(store: CaptureStore, destination: Any, **kwargs: Any) -> BatchUploader:
    options = {"thing": THING, "bandwidth_bytes_per_second": 0, "retry_initial_s": 0.05,
               "retry_max_s": 0.4, **kwargs}
    return BatchUploader(store, destination, **options)


def assert_arrived_once(client: Any, bucket: str, expected: list[str], tmp: Path) -> None:
    """Every remote batch complete and verified; every stored capture there exactly once."""
    ids = arrived_ids(bucket_batches(client, bucket, f"{PREFIX}/{THING}/"), tmp)
    assert len(ids) == len(set(ids)), "a capture arrived twice"
    assert sorted(ids) == sorted(expected)


def assert_nothing_left(store: CaptureStore) -> None:
    assert store.batches() == []
    counts = store.counts()
    assert counts.quarantined == 0 and counts.sealed_batches == 0
    assert counts.open_captures == 0


@pytest.fixture
def store(tmp_path: Path) -> CaptureStore:
    return open_store(tmp_path / "capture")


def test_offline_then_online_every_batch_arrives_once(s3_server: LocalS3Server,
                                                      store: CaptureStore, tmp_path: Path,
                                                      credentials: Any) -> None:
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-offline")
    online = threading.Event()
    uploader = uploader_for(store, s3_destination(s3_server, "capture-offline"),
                            online=online.is_set)
    expected = fill(store, 3, 5)
    uploader.start()
    try:
        for round_ in range(3):  # batches keep coming while the device is offline
            time.sleep(0.2)
            expected += fill(store, 1, 5, start=10_000 * (round_ + 1))
        assert uploader.counts()["paused"] is True
        assert client.list_objects_v2(Bucket="capture-offline").get("KeyCount", 0) == 0
        assert len(store.batches()) == 6
        online.set()
        wait_for(lambda: not store.batches(), timeout_s=30)
    finally:
        uploader.stop(10)
    counts = uploader.counts()
    assert counts["paused"] is False and counts["batches_uploaded"] == 6
    assert counts["captures_uploaded"] == 30 and counts["upload_failures"] == 0
    assert_arrived_once(client, "capture-offline", expected, tmp_path / "check")
    assert_nothing_left(store)


def test_a_missing_bucket_is_reported_and_retried_until_it_exists(
        s3_server: LocalS3Server, store: CaptureStore, tmp_path: Path, credentials: Any,
        caplog: Any) -> None:
    expected = fill(store, 2, 4)
    uploader = uploader_for(store, s3_destination(s3_server, "capture-not-yet"))
    with caplog.at_level(logging.WARNING, "edge_agent.capture.upload"):
        uploader.start()
        try:
            wait_for(lambda: uploader.counts()["upload_failures"] >= 3, timeout_s=20)
            counts = uploader.counts()
            assert counts["last_upload_error"].startswith("NoSuchBucket: ")
            assert counts["backoff_s"] > 0 and len(store.batches()) == 2  # nothing lost
            client: Any = s3_server.client()
            client.create_bucket(Bucket="capture-not-yet")  # the operator fixes it
            wait_for(lambda: not store.batches(), timeout_s=20)
        finally:
            uploader.stop(10)
    assert "NoSuchBucket" in caplog.text and "not uploaded" in caplog.text
    assert uploader.counts()["backoff_s"] == 0
    assert_arrived_once(client, "capture-not-yet", expected, tmp_path / "check")
    assert_nothing_left(store)


def test_wrong_credentials_are_reported_and_retried_until_fixed(
        tmp_path: Path, store: CaptureStore, credentials: pytest.MonkeyPatch,
        caplog: Any) -> None:
    """moto enforces IAM authentication after the first N actions
    (``INITIAL_NO_AUTH_ACTION_COUNT``): the four that set up a user, its policy, its key
    and the bucket; every request after them is checked."""
    import boto3

    server = LocalS3Server(tmp_path / "auth-s3", env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    with server:
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name=REGION)
        iam.create_user(UserName="device")
        iam.put_user_policy(UserName="device", PolicyName="captures", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="device")["AccessKey"]
        client: Any = server.client()
        client.create_bucket(Bucket="capture-auth")
        expected = fill(store, 2, 4)
        credentials.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
        uploader = uploader_for(store, s3_destination(server, "capture-auth"))
        caplog.set_level(logging.WARNING, "edge_agent.capture.upload")
        uploader.start()
        try:
            wait_for(lambda: uploader.counts()["upload_failures"] >= 2, timeout_s=20)
            assert uploader.counts()["last_upload_error"].startswith("InvalidAccessKeyId: ")
            failures = uploader.counts()["upload_failures"]
            credentials.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])  # right id,
            credentials.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")  # wrong secret
            wait_for(lambda: uploader.counts()["last_upload_error"].startswith(
                "SignatureDoesNotMatch: ") and uploader.counts()["upload_failures"]
                > failures + 1, timeout_s=20)
            assert len(store.batches()) == 2
            credentials.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
            wait_for(lambda: not store.batches(), timeout_s=20)
        finally:
            uploader.stop(10)
        assert "InvalidAccessKeyId" in caplog.text and "SignatureDoesNotMatch" in caplog.text
        owner: Any = server.client(access_key=key["AccessKeyId"],
                                   secret_key=key["SecretAccessKey"])
        assert_arrived_once(owner, "capture-auth", expected, tmp_path / "check")
    assert_nothing_left(store)


def test_a_corrupt_batch_is_quarantined_and_never_uploaded(
        s3_server: LocalS3Server, store: CaptureStore, tmp_path: Path,
        credentials: Any) -> None:
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-corrupt")
    expected = fill(store, 3, 4)
    victim_batch = store.batches()[1].batch_id
    victim = sorted(store.batch_dir(victim_batch).glob("*.npz"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x20  # one flipped bit on disk
    victim.write_bytes(bytes(data))
    lost = [line for line in expected if store.batch_dir(victim_batch).joinpath(
        f"{line}.npz").exists()]
    uploader = uploader_for(store, s3_destination(s3_server, "capture-corrupt"))
    assert uploader.run_once() == 2
    keys = [item["Key"] for item in client.list_objects_v2(
        Bucket="capture-corrupt").get("Contents", [])]
    assert keys and not any(victim_batch in key for key in keys)
    assert uploader.counts()["quarantined"] == 1
    assert store.counts().quarantined >= 1 and store.batches() == []
    assert_arrived_once(client, "capture-corrupt", [i for i in expected if i not in lost],
                        tmp_path / "check")


def _kill_rounds(spec: dict[str, Any], rounds: int, seed: int,
                 partial: Callable[[], bool]) -> int:
    """Start an uploader process ``rounds`` times (forked by a zygote that has imported
    everything, so it starts at once) and SIGKILL it at a random moment of its upload;
    returns how many kills left a batch half sent (``partial()`` after the kill)."""
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "helpers")}
    zygote = subprocess.Popen([sys.executable, str(CHILD), json.dumps(
        {**spec, "mode": "zygote"})], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert zygote.stdin is not None and zygote.stdout is not None
    cut = 0
    try:
        assert zygote.stdout.readline().strip() == b"zygote"
        for _ in range(rounds):
            zygote.stdin.write(b"go\n")
            zygote.stdin.flush()
            ready, pid = zygote.stdout.readline().split()
            assert ready == b"ready"
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(int(pid), signal.SIGKILL)
            assert zygote.stdout.readline().split() == [b"reaped", pid]
            cut += partial()
    finally:
        zygote.stdin.close()
        try:
            zygote.wait(10)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait(10)
    return cut


def _finish(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "helpers")}
    done = subprocess.run([sys.executable, str(CHILD), json.dumps(
        {**spec, "mode": "finish", "bandwidth": 0})], capture_output=True, env=env,
        timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def _partial_in_bucket(client: Any, bucket: str) -> Callable[[], bool]:
    def partial() -> bool:
        heads: dict[str, set[str]] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                head, _, name = item["Key"].rpartition("/")
                heads.setdefault(head, set()).add(name)
        return any("batch.json" not in names for names in heads.values())
    return partial


def test_sigkill_during_upload_twenty_times_loses_and_repeats_nothing(
        s3_server: LocalS3Server, store: CaptureStore, tmp_path: Path,
        credentials: Any) -> None:
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-kills")
    # 24 batches of 5 captures of ~6 KB (~750 KB) at 50 KB/s: a batch takes about half
    # a second to send, and each short life of the uploader ends in the middle of one.
    expected = fill(store, 24, 5, size=1500)
    spec = {"root": str(store.root), "prefix": PREFIX, "bandwidth": 50_000,
            "destination": {"kind": "s3", "bucket": "capture-kills",
                            "endpointUrl": s3_server.endpoint_url, "region": REGION}}
    started = time.monotonic()
    cut = _kill_rounds(spec, 20, 1414, _partial_in_bucket(client, "capture-kills"))
    assert cut >= 10, f"only {cut} of 20 kills cut a batch in the middle"
    left = len(open_store(store.root).batches())
    assert 0 < left < 20, f"{left} batches left after the kills"
    counts = _finish(spec)
    assert counts["quarantined"] == 0
    assert time.monotonic() - started < 60
    assert_arrived_once(client, "capture-kills", expected, tmp_path / "check")
    assert_nothing_left(open_store(store.root))


def test_folder_destination_arrives_once_under_kills(tmp_path: Path,
                                                     store: CaptureStore) -> None:
    site = tmp_path / "export"
    site.mkdir()
    expected = fill(store, 16, 5, size=1500)  # ~31 KB batches at 50 KB/s
    spec = {"root": str(store.root), "prefix": PREFIX, "bandwidth": 50_000,
            "destination": {"kind": "folder", "folder": str(site)}}
    root = site / PREFIX / THING

    def partial() -> bool:
        return root.is_dir() and any(not (batch / "batch.json").exists()
                                     for batch in root.iterdir())

    assert _kill_rounds(spec, 6, 7, partial) >= 3
    assert 0 < len(open_store(store.root).batches()) < 16
    assert _finish(spec)["quarantined"] == 0
    ids = [i for batch in sorted(root.iterdir()) for i in check_batch_dir(batch)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert not [p for p in root.rglob(".*")], "temporary files were left"
    assert_nothing_left(open_store(store.root))


_UNWRITABLE = """
import sys
from pathlib import Path
from capture_upload_child import open_store
from agent.device.capture.folder_destination import FolderDestination
from agent.device.capture.upload import BatchUploader
store = open_store(Path(sys.argv[1]))
uploader = BatchUploader(store, FolderDestination(sys.argv[2], "captures", "cam-1"),
                         thing="cam-1", bandwidth_bytes_per_second=0, retry_initial_s=1,
                         retry_max_s=2)
assert uploader.run_once() == 0
print(uploader.counts()["last_upload_error"])
print(len(store.batches()))
"""


def _without_root_override() -> None:
    """Drop the capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the bounding set: the program exec'd next is a root that
    permissions stop."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_an_unwritable_folder_is_reported_and_keeps_the_batches(
        tmp_path: Path, store: CaptureStore) -> None:
    fill(store, 2, 3)
    site = tmp_path / "export"
    site.mkdir()
    site.chmod(0o555)  # read-only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "tests" / "helpers"), str(REPO_ROOT)])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _UNWRITABLE, str(store.root), str(site)],
            capture_output=True, env=env, timeout=60, check=False,
            preexec_fn=_without_root_override if os.geteuid() == 0 else None)
    finally:
        site.chmod(0o755)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    error, left = done.stdout.decode().strip().splitlines()[-2:]
    assert error.startswith("folder_not_writable: ") and "not writable" in error
    assert left == "2"
    assert list(site.iterdir()) == []


class _TokenExchange(http.server.BaseHTTPRequestHandler):
    """The Greengrass Token Exchange Service's answer: container credentials, given
    only to a caller that sends the authorization token."""

    seen: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != "tes-token-123":
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps({"AccessKeyId": "ASIATESTTESTTEST0001", "SecretAccessKey": "tes",
                           "Token": "session-token", "Expiration": time.strftime(
                               "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def token_exchange() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenExchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/2016-11-01/credentialprovider/"
    server.shutdown()


def test_token_exchange_service_credentials_are_used(
        s3_server: LocalS3Server, store: CaptureStore, tmp_path: Path,
        credentials: pytest.MonkeyPatch, token_exchange: str) -> None:
    """No keys in the environment: boto3's default chain asks the Token Exchange Service
    the nucleus names, with its token, as under Greengrass."""
    credentials.delenv("AWS_ACCESS_KEY_ID")
    credentials.delenv("AWS_SECRET_ACCESS_KEY")
    credentials.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", token_exchange)
    credentials.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tes-token-123")
    client: Any = s3_server.client()
    client.create_bucket(Bucket="capture-tes")
    expected = fill(store, 1, 3)
    _TokenExchange.seen.clear()
    uploader = uploader_for(store, s3_destination(s3_server, "capture-tes"))
    assert uploader.run_once() == 1
    assert _TokenExchange.seen and set(_TokenExchange.seen) == {"tes-token-123"}
    assert_arrived_once(client, "capture-tes", expected, tmp_path / "check")
