"""Download a package to a local file: ``file://`` or a path, ``http(s)://``, ``s3://``.

The digest and the size cap are applied while streaming (a 10 GB answer is cut
at the cap, not downloaded). Data goes to ``<dest>.partial``, which is fsynced
and renamed to ``dest`` only when complete and, if a sha256 was given, only
when it matches; any failure removes the partial file. HTTP resumes with a
``Range`` request (``If-Range`` on the first answer's ETag) when the server
supports it and restarts cleanly when it does not. Presigned S3 URLs are plain
HTTPS; ``s3://bucket/key`` uses boto3 when it is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.crash import crash_point
from agent.core.durable import write_chunk
from agent.device.packages.errors import (
    DigestMismatchError,
    FetchError,
    PackageTooLargeError,
    S3UnavailableError,
    staging_io_error,
)

CHUNK = 64 * 1024
PARTIAL_SUFFIX = ".partial"
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_S3_PERMANENT = frozenset({"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidBucketName",
                           "403", "404"})


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    path: Path
    sha256: str
    size: int


class _Retry(Exception):
    """A transient failure: try again (resuming when the source allows)."""


class _Sink:
    """The partial file, its running digest and the size cap."""

    def __init__(self, *, partial: Path, max_bytes: int) -> None:
        self.partial = partial
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.etag: str | None = None
        self._chunks = 0
        try:
            self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as err:
            raise staging_io_error(err, f"creating {partial}") from err

    def check_total(self, total: int, source: str) -> None:
        if total > self.max_bytes:
            raise PackageTooLargeError(f"{source} is {total} bytes; the cap is {self.max_bytes}")

    def restart(self) -> None:
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except OSError as err:
            raise staging_io_error(err, f"truncating {self.partial.name}") from err
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes, source: str) -> None:
        if self.size + len(chunk) > self.max_bytes:
            raise PackageTooLargeError(
                f"{source} is larger than the cap of {self.max_bytes} bytes; stopped there")
        try:
            write_chunk(self._fd, chunk)  # the one place a download writes; tests fail it
        except OSError as err:
            raise staging_io_error(err, f"writing {self.partial.name}") from err
        self.digest.update(chunk)
        self.size += len(chunk)
        self._chunks += 1
        if self._chunks == 1:
            crash_point("mid-download")

    def finish(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise staging_io_error(err, f"syncing {self.partial.name}") from err

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def fetch(url: str | Path, dest: Path, *, expected_sha256: str | None, max_bytes: int,
          timeout_s: float, retries: int = 3) -> FetchResult:
    """Download ``url`` to ``dest``; its sha256 and size. Raises a FetchError or DiskFullError."""
    text = str(url)
    scheme = urllib.parse.urlsplit(text).scheme.lower() if "://" in text else ""
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    sink = _Sink(partial=partial, max_bytes=max_bytes)
    try:
        if scheme in ("", "file"):
            _copy_local(_local_path(text, scheme), sink)
        elif scheme in ("http", "https"):
            _with_retries(text, retries, lambda: _http_attempt(text, sink, timeout_s))
        elif scheme == "s3":
            _fetch_s3(text, sink, timeout_s, retries)
        else:
            raise FetchError(f"unsupported URL scheme {scheme!r} (file, http, https, s3)")
        sink.finish()
        sha256 = sink.digest.hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256.lower():
            raise DigestMismatchError(
                f"{_redact(text)}: archive sha256 {sha256}, the command says {expected_sha256}")
        sink.close()
        try:
            os.replace(partial, dest)
        except OSError as err:
            raise staging_io_error(err, f"renaming {partial.name}") from err
    except BaseException:
        sink.close()
        partial.unlink(missing_ok=True)
        raise
    return FetchResult(path=dest, sha256=sha256, size=sink.size)


def _redact(url: str) -> str:
    """A URL without its query (a presigned URL's query is a credential)."""
    return url.split("?", 1)[0]


def _local_path(text: str, scheme: str) -> Path:
    if not scheme:
        return Path(text)
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{text}: file URLs must name a local path")
    return Path(urllib.parse.unquote(parts.path))


def _copy_local(source: Path, sink: _Sink) -> None:
    try:
        handle = source.open("rb")
    except OSError as err:
        raise FetchError(f"{source}: {err.strerror or err}") from err
    with handle:
        sink.check_total(os.fstat(handle.fileno()).st_size, str(source))
        while True:
            try:
                chunk = handle.read(CHUNK)
            except OSError as err:
                raise FetchError(f"reading {source}: {err.strerror or err}") from err
            if not chunk:
                return
            sink.write(chunk, str(source))


def _with_retries(url: str, retries: int, attempt: Callable[[], None]) -> None:
    for number in range(retries + 1):
        try:
            attempt()
            return
        except _Retry as err:
            if number == retries:
                raise FetchError(f"{_redact(url)}: gave up after {retries + 1} attempt(s): "
                                 f"{err}") from err
            time.sleep(_BACKOFF_S[min(number, len(_BACKOFF_S) - 1)])


def _http_attempt(url: str, sink: _Sink, timeout_s: float) -> None:
    headers = {}
    if sink.size:
        headers["Range"] = f"bytes={sink.size}-"
        if sink.etag:
            headers["If-Range"] = sink.etag
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416:  # our offset is past the end: the file changed; start over
            sink.restart()
            raise _Retry("HTTP 416, restarting from the first byte") from err
        if err.code in (408, 429) or err.code >= 500:
            raise _Retry(f"HTTP {err.code} {err.reason}") from err
        raise FetchError(f"{_redact(url)}: HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
        raise _Retry(f"{type(err).__name__}: {err}") from err
    with response:
        _start_body(response, sink, url)
        length_header = response.headers.get("Content-Length")
        expected = sink.size + int(length_header) if length_header else None
        if expected is not None:
            sink.check_total(expected, _redact(url))
        try:
            while chunk := response.read(CHUNK):
                sink.write(chunk, _redact(url))
        except (OSError, http.client.HTTPException) as err:
            raise _Retry(f"connection lost after {sink.size} bytes: {err}") from err
        # http.client returns b"" (no error) when the peer closes before Content-Length.
        if expected is not None and sink.size < expected:
            raise _Retry(f"connection closed after {sink.size} of {expected} bytes")


def _start_body(response: Any, sink: _Sink, url: str) -> None:
    """Reconcile where this answer starts with what the partial file holds."""
    status = response.status
    if status == 206 and sink.size:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != sink.size:
            sink.restart()
            raise _Retry("the server answered a different range; restarting")
        return
    if status != 200:
        raise FetchError(f"{_redact(url)}: unexpected HTTP status {status}")
    if sink.size:  # the server ignored Range (or the file changed): clean restart
        sink.restart()
    sink.etag = response.headers.get("ETag")


def _fetch_s3(url: str, sink: _Sink, timeout_s: float, retries: int) -> None:
    parts = urllib.parse.urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise FetchError(f"{url}: expected s3://bucket/key")
    try:
        boto3 = importlib.import_module("boto3")
        botocore_config = importlib.import_module("botocore.config")
    except ImportError as err:
        raise S3UnavailableError(
            "s3:// URLs need boto3, which is not installed here; install it or send a "
            "presigned https:// URL") from err
    client = boto3.client("s3", config=botocore_config.Config(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1}))
    _with_retries(url, retries, lambda: _s3_attempt(client, bucket, key, sink, url))


def _s3_attempt(client: Any, bucket: str, key: str, sink: _Sink, url: str) -> None:
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if sink.size:
        request["Range"] = f"bytes={sink.size}-"
    try:
        response = client.get_object(**request)
    except Exception as err:  # botocore's error types are not importable without boto3
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code == "InvalidRange":
            sink.restart()
            raise _Retry("S3 InvalidRange, restarting from the first byte") from err
        if code in _S3_PERMANENT:
            raise FetchError(f"{url}: {code}: {err}") from err
        raise _Retry(f"{type(err).__name__}: {err}") from err
    if sink.size and not response.get("ContentRange"):
        sink.restart()
    length = response.get("ContentLength")
    expected = sink.size + int(length) if length is not None else None
    if expected is not None:
        sink.check_total(expected, url)
    body = response["Body"]
    try:
        while chunk := body.read(CHUNK):
            sink.write(chunk, url)
    except (OSError, http.client.HTTPException) as err:
        raise _Retry(f"connection lost after {sink.size} bytes: {err}") from err
    except Exception as err:  # botocore's ReadTimeoutError and friends
        if type(err).__module__.startswith(("botocore", "urllib3")):
            raise _Retry(f"{type(err).__name__}: {err}") from err
        raise
    finally:
        with contextlib.suppress(Exception):
            body.close()
    if expected is not None and sink.size < expected:
        raise _Retry(f"connection closed after {sink.size} of {expected} bytes")
