"""Why a model package was refused. Staging stops at the first failure and leaves
nothing behind; ``code`` names the reason for machines (a ``rejected`` event). This is
the packages' branch; the whole tree of the package's errors is drawn in
:mod:`agent.core.errors`::

    AgentError
    ├── PackageError                    a package that must not be installed
    │   ├── PackageFormatError          not a package: no or malformed manifest.json, not a tar.gz
    │   │   ├── TruncatedArchiveError   the archive ends early (cut download, short file)
    │   │   └── ModelInfoMismatchError  model.json disagrees with the signed manifest
    │   ├── PackageSignatureError       the manifest must not be trusted (also a protocol
    │   │   │                           SignatureError, so either catch works)
    │   │   ├── UnsignedPackageError        no key_id or signature   (MissingSignatureError)
    │   │   ├── UnknownPackageKeyError      signed by an untrusted key (UnknownKeyError)
    │   │   ├── RevokedPackageKeyError      signed by a revoked key    (RevokedKeyError)
    │   │   └── BadPackageSignatureError    forged or edited after signing (BadSignatureError)
    │   ├── VersionBelowFloorError      older than the anti-rollback floor
    │   ├── DigestMismatchError         archive or file content differs from what was signed
    │   │   ├── MissingFileError        a file the manifest lists is not in the archive
    │   │   └── UnlistedFileError       a file in the archive the manifest does not list
    │   ├── UnsafeArchiveError          path traversal, absolute path, link, device, fifo,
    │   │   │                           sparse file, duplicate name (also by case or Unicode
    │   │   │                           normalisation), control character in a name
    │   │   └── ArchiveLimitError       past a PackageLimits limit (``limit``, ``value``):
    │   │                               size, ratio, members, depth, name length
    │   ├── FetchError                  the download failed (status, connection, retries spent)
    │   │   ├── PackageTooLargeError    the download passed the size cap (stopped there)
    │   │   ├── FetchLimitError         past fetch_deadline_s or under fetch_min_bytes_per_s
    │   │   ├── FetchCancelledError     a newer stage or the rollout's rollback cancelled it
    │   │   ├── PackageSourceNotAllowedError  a local path outside the package folders, or
    │   │   │                           not a regular file (a device, a FIFO, /proc)
    │   │   └── S3UnavailableError      s3:// needs boto3 (also a BackendUnavailableError)
    │   ├── StagingIOError              the staging area could not be written (EACCES, EIO)
    │   │   └── DiskFullError           no space left (ENOSPC, quota, file-size limit)
    │   └── GoldenError                 the golden vectors were not reproduced on this device
    │       ├── GoldenMismatchError     outputs differ beyond the manifest's tolerance
    │       ├── GoldenRuntimeError      the runtime refused the model or a run failed
    │       │   └── TensorSpecMismatchError the artifact's tensors are not the manifest's
    │       ├── GoldenCrashError        the check process died of a signal (``signal_name``)
    │       └── GoldenTimeoutError      the check did not finish in time and was killed
    └── ArtifactError (agent.core.errors)    TargetMismatchError and ArchitectureMismatchError
                                        are reused as they are for another target or CPU
"""

from __future__ import annotations

import errno
from typing import ClassVar

from agent.core.errors import AgentError, BackendUnavailableError
from agent.wire.errors import (
    BadSignatureError,
    MissingSignatureError,
    RevokedKeyError,
    SignatureError,
    UnknownKeyError,
)


class PackageError(AgentError):
    """A model package that must not be installed; nothing was changed."""

    code: ClassVar[str] = "package"


class PackageFormatError(PackageError):
    code = "package_format"


class TruncatedArchiveError(PackageFormatError):
    code = "truncated_archive"


class ModelInfoMismatchError(PackageFormatError):
    """The package's model.json says another model than its manifest (name, label, tensors or
    metadata): the signer packaged inconsistent files, so neither can be believed."""

    code = "model_info_mismatch"


class PackageSignatureError(PackageError, SignatureError):
    code = "package_signature"


class UnsignedPackageError(PackageSignatureError, MissingSignatureError):
    code = "missing_signature"


class UnknownPackageKeyError(PackageSignatureError, UnknownKeyError):
    code = "unknown_key"


class RevokedPackageKeyError(PackageSignatureError, RevokedKeyError):
    code = "revoked_key"


class BadPackageSignatureError(PackageSignatureError, BadSignatureError):
    code = "bad_signature"


class VersionBelowFloorError(PackageError):
    code = "version_below_floor"


class DigestMismatchError(PackageError):
    code = "digest_mismatch"


class MissingFileError(DigestMismatchError):
    code = "missing_file"


class UnlistedFileError(DigestMismatchError):
    code = "unlisted_file"


class UnsafeArchiveError(PackageError):
    code = "unsafe_archive"


class ArchiveLimitError(UnsafeArchiveError):
    """The archive passed one of the :class:`~agent.device.packages.limits.PackageLimits`:
    ``limit`` is the setting's name, ``value`` its value; the message names both."""

    code = "archive_limit"

    def __init__(self, message: str, *, limit: str, value: int) -> None:
        super().__init__(f"{message} (limit {limit}={value})")
        self.limit = limit
        self.value = value


class FetchError(PackageError):
    code = "fetch"


class PackageTooLargeError(FetchError):
    code = "too_large"


class FetchLimitError(FetchError):
    """The download took too long (``fetch_deadline_s``, all attempts together) or came
    slower than ``fetch_min_bytes_per_s`` over ``fetch_rate_window_s``: ``limit`` is the
    setting's name, ``value`` its value; the message names both."""

    code = "fetch_limit"

    def __init__(self, message: str, *, limit: str, value: float) -> None:
        super().__init__(f"{message} (limit {limit}={value:g})")
        self.limit = limit
        self.value = value


class FetchCancelledError(FetchError):
    """The stage was cancelled by a command that supersedes it (a ``stage`` of another
    rollout or a newer ``rollout_seq``, or its own rollout's ``rollback``), while it
    downloaded or before what it verified was installed."""

    code = "fetch_cancelled"


class PackageSourceNotAllowedError(FetchError):
    """A ``file://`` URL or path the device must not read a package from: outside the
    allowed package folders once every link and ``..`` is resolved, or not a regular file
    (a device such as ``/dev/zero``, a FIFO, a file of ``/proc`` or ``/sys``)."""

    code = "source_not_allowed"


class S3UnavailableError(FetchError, BackendUnavailableError):
    code = "s3_unavailable"


class StagingIOError(PackageError):
    code = "staging_io"


class DiskFullError(StagingIOError):
    code = "disk_full"


# EFBIG: a file-size limit (RLIMIT_FSIZE, a filesystem's maximum) stops the write the same way.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def staging_io_error(err: OSError, what: str) -> StagingIOError:
    """The typed error for a failed local write: DiskFullError when space ran out."""
    reason = err.strerror or str(err)
    if err.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"{what}: {reason}")
    return StagingIOError(f"{what}: {reason}")


class GoldenError(PackageError):
    code = "golden"


class GoldenMismatchError(GoldenError):
    code = "golden_mismatch"


class GoldenRuntimeError(GoldenError):
    code = "golden_runtime"


class TensorSpecMismatchError(GoldenRuntimeError):
    """The artifact takes or gives other tensors (name, dtype, shape) than the manifest's
    specs say: clients would be told a layout the model does not have."""

    code = "tensor_spec_mismatch"


class GoldenCrashError(GoldenError):
    code = "golden_crash"

    def __init__(self, message: str, *, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name


class GoldenTimeoutError(GoldenError):
    code = "golden_timeout"
