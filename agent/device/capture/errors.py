"""Errors of the capture path (see the tree in :mod:`agent.core.errors`).

::

    CaptureError                     a capture that cannot be stored, read or sent
    ├── CaptureFormatError           a capture file or batch that is not what it claims
    ├── CaptureRulesError            capture rules refused: malformed, or over the device's caps
    └── CaptureUploadError           a destination refused or could not take a batch
"""

from __future__ import annotations

from agent.core.errors import AgentError


class CaptureError(AgentError):
    """A capture that cannot be stored, read or sent."""


class CaptureFormatError(CaptureError):
    """A capture file or batch that is not what it claims (truncated, edited, wrong digest)."""


class CaptureRulesError(CaptureError):
    """Capture rules refused: malformed, or asking for more than the device allows."""


class CaptureUploadError(CaptureError):
    """A destination refused a batch or could not be reached; ``retry`` says whether trying
    again later can help (a missing bucket or wrong credentials may be fixed meanwhile, so
    the uploader retries both, with backoff)."""

    def __init__(self, message: str, *, code: str = "", retry: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry
