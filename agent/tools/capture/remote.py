"""Where uploaded capture batches are read from: S3 (or an S3-compatible server) or a folder.

Both hold the devices' uploads in the same layout::

    <bucket or folder>/<prefix>/<thing>/<batch_id>/<capture_id>.npz ...
                                                   manifest.jsonl
                                                   batch.json       uploaded last

A batch counts only once its ``batch.json`` is there: :meth:`BatchSource.batches` lists
exactly those. ``s3://bucket/prefix`` reads through boto3 (the ``s3`` or ``tools`` extra)
with the usual AWS credential chain and an optional ``endpoint_url``; any other source is a
folder, the one that holds the ``<thing>/`` folders (an upload folder's ``<prefix>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.device.capture.batches import BATCH_FILE, MANIFEST_FILE
from agent.device.capture.errors import CaptureFormatError
from agent.tools.capture.errors import CaptureSourceError

BATCH_JSON = BATCH_FILE
MANIFEST = MANIFEST_FILE
_NAME = re.compile(r"^[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]{0,127}$")


@dataclass(frozen=True, order=True)
class RemoteBatch:
    """One complete remote batch: the device that sealed it and its id."""

    batch_id: str
    thing: str

    @property
    def key(self) -> str:
        """``<thing>/<batch_id>``: how a dataset remembers it was pulled."""
        return f"{self.thing}/{self.batch_id}"


class BatchSource(Protocol):
    """A place holding uploaded batches."""

    description: str

    def batches(self) -> list[RemoteBatch]:
        """The complete batches, oldest first (batch ids sort by time)."""

    def read(self, batch: RemoteBatch, name: str, limit: int) -> bytes:
        """One file of a batch; a missing file or one over ``limit`` bytes is a
        :class:`CaptureFormatError` (the batch is not what it claims)."""


def safe_name(name: str) -> bool:
    """Whether ``name`` can be a thing, batch id or file name (one path segment)."""
    return bool(_NAME.match(name)) and name not in (".", "..")


class FolderSource:
    """Batches under a folder (an air-gapped site's upload folder, or a copy of a bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def batches(self) -> list[RemoteBatch]:
        if not self.root.is_dir():
            raise CaptureSourceError(f"{self.root} is not a folder")
        try:
            found = [RemoteBatch(batch_id=path.parent.name, thing=path.parent.parent.name)
                     for path in self.root.glob(f"*/*/{BATCH_JSON}")]
        except OSError as err:
            raise CaptureSourceError(f"cannot list {self.root}: {err}") from err
        return sorted(b for b in found if safe_name(b.thing) and safe_name(b.batch_id))

    def read(self, batch: RemoteBatch, name: str, limit: int) -> bytes:
        if not safe_name(name):
            raise CaptureFormatError(f"batch {batch.key} names the file {name!r}")
        path = self.root / batch.thing / batch.batch_id / name
        try:
            size = path.stat().st_size
            if size > limit:
                raise CaptureFormatError(f"{batch.key}/{name} is {size} bytes, over {limit}")
            return path.read_bytes()
        except FileNotFoundError as err:
            raise CaptureFormatError(f"{batch.key}/{name} is missing") from err
        except OSError as err:
            raise CaptureSourceError(f"cannot read {path}: {err}") from err


class S3Source:
    """Batches in an S3 bucket under a prefix, read through a boto3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.description = f"s3://{bucket}/{self.prefix}"

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def batches(self) -> list[RemoteBatch]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._base()
        found: list[RemoteBatch] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for item in page.get("Contents", []):
                    parts = str(item["Key"])[len(base):].split("/")
                    if (len(parts) == 3 and parts[2] == BATCH_JSON and safe_name(parts[0])
                            and safe_name(parts[1])):
                        found.append(RemoteBatch(batch_id=parts[1], thing=parts[0]))
        except (BotoCoreError, ClientError) as err:
            raise CaptureSourceError(f"cannot list {self.description}: "
                                     f"{_describe(err)}") from err
        return sorted(found)

    def read(self, batch: RemoteBatch, name: str, limit: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if not safe_name(name):
            raise CaptureFormatError(f"batch {batch.key} names the file {name!r}")
        key = f"{self._base()}{batch.key}/{name}"
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            size = int(answer.get("ContentLength", 0))
            if size > limit:
                answer["Body"].close()
                raise CaptureFormatError(f"{batch.key}/{name} is {size} bytes, over {limit}")
            data: bytes = answer["Body"].read()
            return data
        except (BotoCoreError, ClientError) as err:
            if _error_code(err) in ("NoSuchKey", "404"):
                raise CaptureFormatError(f"{batch.key}/{name} is missing") from err
            raise CaptureSourceError(f"cannot read s3://{self.bucket}/{key}: "
                                     f"{_describe(err)}") from err


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _describe(err: BaseException) -> str:
    code = _error_code(err)
    return f"{code}: {err}" if code else f"{type(err).__name__}: {err}"


def open_source(source: str | Path, *, endpoint_url: str | None = None,
                region: str | None = None, client: Any = None) -> BatchSource:
    """The source ``s3://bucket/prefix`` (through ``client``, or a boto3 client made with
    ``endpoint_url`` and ``region``) or a folder."""
    text = str(source)
    if not text.startswith("s3://"):
        if endpoint_url is not None:
            raise CaptureSourceError("--endpoint-url is for an s3:// source only")
        return FolderSource(Path(source))
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not bucket:
        raise CaptureSourceError(f"{text!r} names no bucket (s3://bucket/prefix)")
    if client is None:
        import boto3  # the s3 (or tools) extra
        from botocore.exceptions import BotoCoreError

        try:
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        except (BotoCoreError, ValueError) as err:
            raise CaptureSourceError(f"cannot make an S3 client: {_describe(err)}") from err
    return S3Source(bucket, prefix, client)
