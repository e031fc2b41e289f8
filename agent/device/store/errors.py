"""What the model store raises: every refusal is a :class:`StoreError`, and nothing
changed on disk when one is raised. The meaning of each class, and the whole tree of the
package's errors, is drawn in :mod:`agent.core.errors`."""

from __future__ import annotations

from typing import ClassVar

from agent.core.errors import AgentError


class StoreError(AgentError):
    code: ClassVar[str] = "store"


class StoreLockedError(StoreError):
    code = "store_locked"


class StoreCorruptError(StoreError):
    code = "store_corrupt"


class StoreIOError(StoreError):
    code = "store_io"


class InvalidVersionIdError(StoreError):
    code = "invalid_version_id"


class VersionExistsError(StoreError):
    code = "version_exists"


class UnknownVersionError(StoreError):
    code = "unknown_version"


class TrialPendingError(StoreError):
    code = "trial_pending"


class NoTrialError(StoreError):
    code = "no_trial"


class RollbackUnavailableError(StoreError):
    code = "rollback_unavailable"
