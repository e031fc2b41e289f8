"""Fetching packages: local paths, HTTP with resume and retry, s3://, caps and full disks.

HTTP runs against a real ``http.server`` on 127.0.0.1. A full disk is shown two
ways: the real kernel path (a child process under ``RLIMIT_FSIZE``, whose writes
fail with EFBIG, as on a filesystem at its size limit) and ENOSPC itself
(``agent.device.packages.fetch.write_chunk``, the one place a download writes, made to raise).
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import BackendUnavailableError
from agent.device.packages import fetch as fetch_module
from agent.device.packages.errors import (
    DigestMismatchError,
    DiskFullError,
    FetchError,
    PackageTooLargeError,
    S3UnavailableError,
)
from agent.device.packages.fetch import fetch

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Served:
    """What the test server answers; it records the Range header of every request."""

    data: bytes = DATA
    ranges: bool = True
    drop_once_at: int | None = None  # close the connection after this many body bytes, once
    statuses: list[int] = field(default_factory=list)  # answered first, one per request
    endless: bool = False  # no Content-Length, never-ending body
    seen: list[str | None] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            served.seen.append(self.headers.get("Range"))
            if served.statuses:
                self.send_error(served.statuses.pop(0))
                return
            if served.endless:
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(10_000):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
                return
            start = 0
            header = self.headers.get("Range")
            if served.ranges and header:
                start = int(header.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(served.data) - 1}/{len(served.data)}")
            else:
                self.send_response(200)
            body = served.data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            if served.drop_once_at is not None:
                cut, served.drop_once_at = served.drop_once_at, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pkg.tar.gz", served
    httpd.shutdown()
    httpd.server_close()


def _fetch(url: str, dest: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"expected_sha256": SHA, "max_bytes": 10**7, "timeout_s": 5.0,
                               "retries": 2}
    options.update(kwargs)
    return fetch(url, dest, **options)


def _nothing_partial(dest: Path) -> None:
    assert list(dest.parent.glob("*.partial")) == []


def test_local_path_and_file_url(tmp_path: Path) -> None:
    source = tmp_path / "src" / "pkg one.tar.gz"
    source.parent.mkdir()
    source.write_bytes(DATA)
    (tmp_path / "out").mkdir()
    result = _fetch(str(source), tmp_path / "out" / "a")
    assert (result.sha256, result.size) == (SHA, len(DATA))
    assert (tmp_path / "out" / "a").read_bytes() == DATA
    _fetch(source.as_uri(), tmp_path / "out" / "b")
    assert (tmp_path / "out" / "b").read_bytes() == DATA
    _nothing_partial(tmp_path / "out" / "b")
    with pytest.raises(FetchError, match="No such file"):
        _fetch(str(tmp_path / "missing"), tmp_path / "out" / "c")
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        _fetch("ftp://example.com/x", tmp_path / "out" / "c")


def test_archive_digest_and_size_cap(tmp_path: Path) -> None:
    source = tmp_path / "pkg"
    source.write_bytes(DATA)
    dest = tmp_path / "out" / "pkg"
    dest.parent.mkdir()
    with pytest.raises(DigestMismatchError, match="sha256"):
        _fetch(str(source), dest, expected_sha256="0" * 64)
    with pytest.raises(PackageTooLargeError, match="cap"):
        _fetch(str(source), dest, max_bytes=len(DATA) - 1)
    assert list(dest.parent.iterdir()) == []


def test_http_download(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    result = _fetch(url, tmp_path / "pkg")
    assert result.sha256 == SHA and (tmp_path / "pkg").read_bytes() == DATA
    assert served.seen == [None]
    _nothing_partial(tmp_path / "pkg")


def test_http_resumes_with_range_after_a_dropped_connection(server: tuple[str, Served],
                                                            tmp_path: Path) -> None:
    url, served = server
    served.drop_once_at = 100_000
    _fetch(url, tmp_path / "pkg")
    assert (tmp_path / "pkg").read_bytes() == DATA
    assert served.seen == [None, "bytes=100000-"]


def test_http_restarts_cleanly_when_ranges_are_ignored(server: tuple[str, Served],
                                                       tmp_path: Path) -> None:
    url, served = server
    served.ranges = False
    served.drop_once_at = 100_000
    _fetch(url, tmp_path / "pkg")
    assert (tmp_path / "pkg").read_bytes() == DATA
    assert served.seen == [None, "bytes=100000-"]  # asked; got the whole file again


def test_http_errors_retry_only_when_transient(server: tuple[str, Served],
                                               tmp_path: Path) -> None:
    url, served = server
    served.statuses = [503]
    _fetch(url, tmp_path / "a")
    assert len(served.seen) == 2
    served.seen.clear()
    served.statuses = [404]
    with pytest.raises(FetchError, match="404"):
        _fetch(url, tmp_path / "b")
    assert len(served.seen) == 1
    served.seen.clear()
    served.statuses = [500, 500, 500]
    with pytest.raises(FetchError, match="gave up after 3 attempt"):
        _fetch(url, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_http_size_cap_applies_while_streaming(server: tuple[str, Served],
                                               tmp_path: Path) -> None:
    url, served = server
    with pytest.raises(PackageTooLargeError, match="cap"):  # refused from Content-Length
        _fetch(url, tmp_path / "pkg", max_bytes=1000)
    served.endless = True
    started = time.monotonic()
    with pytest.raises(PackageTooLargeError, match="stopped there"):
        _fetch(url, tmp_path / "pkg", max_bytes=1_000_000, expected_sha256=None)
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_enospc_while_downloading_leaves_nothing(server: tuple[str, Served], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = server
    calls = []
    real_write = fetch_module.write_chunk

    def disk_fills(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(fetch_module, "write_chunk", disk_fills)
    with pytest.raises(DiskFullError, match="No space left"):
        _fetch(url, tmp_path / "pkg")
    assert len(calls) == 2  # not retried: a full disk is not a network problem
    assert list(tmp_path.iterdir()) == []


_RLIMIT_CHILD = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from agent.device.packages.errors import DiskFullError
from agent.device.packages.fetch import fetch
try:
    fetch(sys.argv[1], Path(sys.argv[2]), expected_sha256=None, max_bytes=10**7, timeout_s=5)
except DiskFullError as err:
    print("DiskFullError:", err)
    sys.exit(0)
sys.exit(1)
"""


def test_file_size_limit_in_a_child_process(tmp_path: Path) -> None:
    source = tmp_path / "pkg"
    source.write_bytes(DATA)
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.run([sys.executable, "-c", _RLIMIT_CHILD, str(source), str(out / "pkg")],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert "File too large" in child.stdout
    assert list(out.iterdir()) == []


class _FakeBody:
    def __init__(self, data: bytes, *, fail_after: int | None = None) -> None:
        self.data, self.at, self.fail_after = data, 0, fail_after

    def read(self, amount: int) -> bytes:
        if self.fail_after is not None and self.at >= self.fail_after:
            raise ConnectionResetError("reset by peer")
        chunk = self.data[self.at:self.at + amount]
        self.at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class _FakeS3:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if request["Key"] == "missing":
            err = Exception("An error occurred (NoSuchKey)")
            err.response = {"Error": {"Code": "NoSuchKey"}}  # type: ignore[attr-defined]
            raise err
        start = int(request.get("Range", "bytes=0-").removeprefix("bytes=").rstrip("-"))
        body = DATA[start:]
        reply: dict[str, Any] = {
            "Body": _FakeBody(body, fail_after=100_000 if len(self.requests) == 1 else None),
            "ContentLength": len(body)}
        if start:
            reply["ContentRange"] = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
        return reply


def test_s3_with_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _FakeS3()
    boto3 = types.SimpleNamespace(client=lambda service, config: client)
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    monkeypatch.setitem(sys.modules, "botocore", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "botocore.config",
                        types.SimpleNamespace(Config=lambda **kwargs: kwargs))
    result = _fetch("s3://models/fleet/pkg.tar.gz", tmp_path / "pkg")
    assert result.sha256 == SHA
    assert client.requests == [{"Bucket": "models", "Key": "fleet/pkg.tar.gz"},
                               {"Bucket": "models", "Key": "fleet/pkg.tar.gz",
                                "Range": f"bytes={client.requests[1]['Range'][6:]}"}]
    assert int(client.requests[1]["Range"][6:-1]) > 0
    with pytest.raises(FetchError, match="NoSuchKey"):
        _fetch("s3://models/missing", tmp_path / "other")
    assert len(client.requests) == 3  # a missing key is not retried


def test_s3_without_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(S3UnavailableError, match="boto3") as err:
        _fetch("s3://models/pkg.tar.gz", tmp_path / "pkg")
    assert isinstance(err.value, BackendUnavailableError)
    assert list(tmp_path.iterdir()) == []
