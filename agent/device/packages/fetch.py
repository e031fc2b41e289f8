"""Download a package to a local file: ``file://`` or a path, ``http(s)://``, ``s3://``.

The digest and the size cap are applied while streaming (a 10 GB answer is cut
at the cap, not downloaded). Data goes to ``<dest>.partial``, which is fsynced
and renamed to ``dest`` only when complete and, if a sha256 was given, only
when it matches; any failure removes the partial file. HTTP resumes with a
``Range`` request (``If-Range`` on the first answer's ETag) when the server
supports it and restarts cleanly when it does not. Presigned S3 URLs are plain
HTTPS; ``s3://bucket/key`` uses boto3 when it is installed.

Every download has an overall deadline and a minimum rate, and can be cancelled
(:mod:`agent.device.packages.fetch_watch`): a server that trickles or stalls is cut
off with a :class:`FetchLimitError` naming the limit, a cancel with a
:class:`FetchCancelledError`, the partial file removed either way. A local source
is read only where :mod:`agent.device.packages.local_source` allows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.crash import crash_point
from agent.core.durable import write_chunk
from agent.device.packages.errors import (
    DigestMismatchError,
    FetchError,
    PackageSourceNotAllowedError,
    PackageTooLargeError,
    S3UnavailableError,
    staging_io_error,
)
from agent.device.packages.fetch_watch import FetchWatch
from agent.device.packages.local_source import open_local_package

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

    def __init__(self, *, partial: Path, max_bytes: int, watch: FetchWatch) -> None:
        self.partial = partial
        self.watch = watch
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
        self.watch.add(len(chunk))
        self.watch.check()  # the deadline and a cancel, between chunks
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
          timeout_s: float, retries: int = 3, deadline_s: float | None = None,
          min_bytes_per_s: float = 0, rate_window_s: float = 30.0,
          allowed_dirs: Sequence[Path] | None = None,
          cancel: threading.Event | None = None) -> FetchResult:
    """Download ``url`` to ``dest``; its sha256 and size. Raises a FetchError or DiskFullError.

    ``deadline_s`` bounds the whole download, ``min_bytes_per_s`` its average over any
    ``rate_window_s``; setting ``cancel`` stops it within a fraction of a second. A local
    source must be a regular file in one of ``allowed_dirs`` (None: anywhere but
    ``/proc``, ``/sys`` and ``/dev``)."""
    text = str(url)
    scheme = urllib.parse.urlsplit(text).scheme.lower() if "://" in text else ""
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    watch = FetchWatch(_redact(text), deadline_s=deadline_s, min_bytes_per_s=min_bytes_per_s,
                       window_s=rate_window_s, cancel=cancel)
    local = _local_path(text, scheme) if scheme in ("", "file") else None
    sink = _Sink(partial=partial, max_bytes=max_bytes, watch=watch)
    try:
        with watch:
            if local is not None:
                _copy_local(local, allowed_dirs, sink)
            elif scheme in ("http", "https"):
                _with_retries(text, retries, lambda: _http_attempt(text, sink, timeout_s),
                              watch)
            elif scheme == "s3":
                _fetch_s3(text, sink, timeout_s, retries)
            else:
                raise FetchError(f"unsupported URL scheme {scheme!r} (file, http, https, s3)")
            watch.raise_stopped()
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


def _local_path(text: str, scheme: str) -> str:
    if not scheme:
        return text
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise PackageSourceNotAllowedError(
            f"{_redact(text)}: file URLs must name a path on this device")
    return urllib.parse.unquote(parts.path)


def _copy_local(source: str, allowed_dirs: Sequence[Path] | None, sink: _Sink) -> None:
    handle = open_local_package(source, allowed_dirs)
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


def _with_retries(url: str, retries: int, attempt: Callable[[], None],
                  watch: FetchWatch) -> None:
    for number in range(retries + 1):
        try:
            attempt()
            return
        except _Retry as err:
            watch.raise_stopped(err)  # the watch broke the connection: its reason counts
            if number == retries:
                raise FetchError(f"{_redact(url)}: gave up after {retries + 1} attempt(s): "
                                 f"{err}") from err
            watch.wait(_BACKOFF_S[min(number, len(_BACKOFF_S) - 1)])
        except FetchError as err:
            watch.raise_stopped(err)
            raise


def _http_attempt(url: str, sink: _Sink, timeout_s: float) -> None:
    headers = {}
    if sink.size:
        headers["Range"] = f"bytes={sink.size}-"
        if sink.etag:
            headers["If-Range"] = sink.etag
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _opener(sink.watch).open(request, timeout=timeout_s)
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
            # read1: what has come, up to a chunk, so a slow link's rate is seen as it is
            while chunk := response.read1(CHUNK):
                sink.write(chunk, _redact(url))
        except (OSError, http.client.HTTPException) as err:
            raise _Retry(f"connection lost after {sink.size} bytes: {err}") from err
        # http.client returns b"" (no error) when the peer closes before Content-Length.
        if expected is not None and sink.size < expected:
            raise _Retry(f"connection closed after {sink.size} of {expected} bytes")


class _WatchedHTTP(http.client.HTTPConnection):
    watch: FetchWatch | None = None

    def connect(self) -> None:
        super().connect()
        if self.watch is not None:
            self.watch.track(self.sock)


class _WatchedHTTPS(http.client.HTTPSConnection):
    watch: FetchWatch | None = None

    def connect(self) -> None:
        super().connect()  # self.sock is the TLS socket from here on
        if self.watch is not None:
            self.watch.track(self.sock)


class _WatchedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """urllib's HTTP and HTTPS handlers, handing each connection's socket to the watch."""

    def __init__(self, watch: FetchWatch) -> None:
        urllib.request.HTTPHandler.__init__(self)
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self._open_with(_WatchedHTTP, req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self._open_with(_WatchedHTTPS, req)

    def _open_with(self, kind: type[_WatchedHTTP] | type[_WatchedHTTPS],
                   req: urllib.request.Request) -> http.client.HTTPResponse:
        watch = self.watch

        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            made = kind(host, **kwargs)
            made.watch = watch
            return made

        return self.do_open(connection, req)


def _opener(watch: FetchWatch) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_WatchedHandler(watch))


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
    _with_retries(url, retries, lambda: _s3_attempt(client, bucket, key, sink, url), sink.watch)


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
