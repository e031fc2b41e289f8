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
    │   │                               oversized member, too many members, duplicate name
    │   ├── FetchError                  the download failed (status, connection, retries spent)
    │   │   ├── PackageTooLargeError    the download passed the size cap (stopped there)
    │   │   └── S3UnavailableError      s3:// needs boto3 (also a BackendUnavailableError)
    │   ├── StagingIOError              the staging area could not be written (EACCES, EIO)
    │   │   └── DiskFullError           no space left (ENOSPC, quota, file-size limit)
    │   └── GoldenError                 the golden vectors were not reproduced on this device
    │       ├── GoldenMismatchError     outputs differ beyond the manifest's tolerance
    │       ├── GoldenRuntimeError      the runtime refused the model or a run failed
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


class FetchError(PackageError):
    code = "fetch"


class PackageTooLargeError(FetchError):
    code = "too_large"


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


class GoldenCrashError(GoldenError):
    code = "golden_crash"

    def __init__(self, message: str, *, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name


class GoldenTimeoutError(GoldenError):
    code = "golden_timeout"
