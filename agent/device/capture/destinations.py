"""Where sealed capture batches go, and the remote layout every destination shares::

    <bucket or folder>/<prefix>/<thing>/<batch_id>/<capture_id>.npz ...
                                                    manifest.jsonl
                                                    batch.json      written last

A remote batch counts only once its ``batch.json`` is there; sending the same batch
again writes the same names, so a batch arrives once even when an upload is repeated.
:func:`make_destination` builds the destination an ``upload`` block names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from agent.device.capture.batches import BATCH_ID
from agent.device.capture.errors import CaptureUploadError

if TYPE_CHECKING:
    from agent.device.capture.config import UploadConfig

_THING = re.compile(r"^[A-Za-z0-9:_\-]{1,128}$")
_FILE = re.compile(r"^(?:[0-9a-f]{32}\.npz|manifest\.jsonl|batch\.json)$")


class Destination(Protocol):
    """What the uploader sends a batch to."""

    description: str  # for logs: ``s3://bucket/prefix`` or the folder

    def has_batch(self, batch_id: str) -> bool:
        """Whether the batch is complete there (its ``batch.json`` is present)."""
        ...

    def begin_batch(self, batch_id: str) -> None:
        """Called before a batch's first file (a folder drops what a cut upload left)."""
        ...

    def put(self, batch_id: str, name: str, data: bytes) -> None:
        """Store one file of a batch; raises :class:`CaptureUploadError`."""
        ...

    def close(self) -> None:
        ...


def check_thing(thing: str) -> str:
    """The thing name, if it is one AWS IoT accepts (it becomes a key or folder part)."""
    if not _THING.match(thing):
        raise CaptureUploadError(f"thing name {thing!r} cannot name a capture destination "
                                 "path", code="invalid_name", retry=False)
    return thing


def check_names(batch_id: str, name: str) -> None:
    """Refuse a batch id or file name outside the layout (never a path of its own)."""
    if not BATCH_ID.match(batch_id):
        raise CaptureUploadError(f"batch id {batch_id!r} is not a capture batch id",
                                 code="invalid_name", retry=False)
    if not _FILE.match(name):
        raise CaptureUploadError(f"file name {name!r} is not part of a capture batch",
                                 code="invalid_name", retry=False)


def clean_prefix(prefix: str) -> str:
    """The prefix without leading or trailing slashes (``""`` for none)."""
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise CaptureUploadError(f"prefix {prefix!r} must not contain '.' or '..'",
                                 code="invalid_name", retry=False)
    return "/".join(parts)


def make_destination(config: UploadConfig, thing: str) -> Destination | None:
    """The destination ``config`` names for this thing; None when ``kind`` is ``none``
    (batches then stay on the device, inside the budget)."""
    if config.kind == "s3":
        from agent.device.capture.s3_destination import S3Destination

        assert config.bucket is not None  # the config's validator requires it
        return S3Destination(config.bucket, config.prefix, thing, region=config.region,
                             endpoint_url=config.endpoint_url)
    if config.kind == "folder":
        from agent.device.capture.folder_destination import FolderDestination

        assert config.folder is not None
        return FolderDestination(config.folder, config.prefix, thing)
    return None
