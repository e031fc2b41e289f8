"""Errors of the emulated nucleus (its branch; the whole tree of the package's errors is
drawn in :mod:`agent.core.errors`)::

    AgentError
    ├── NucleusError            the emulated nucleus cannot start or do what was asked
    │   ├── FramingError        bytes on the IPC socket that are not an event-stream message
    │   └── IpcServiceError     an operation answered with a modeled Greengrass error
    └── RecipeError             a component recipe that cannot be loaded
                                (:mod:`agent.tools.greengrass.recipe`, re-exported by the package)
"""

from __future__ import annotations

from typing import Any

from agent.core.errors import AgentError


class NucleusError(AgentError):
    """The emulated nucleus cannot start or do what was asked."""


class FramingError(NucleusError):
    """Bytes on the IPC socket that are not a well-formed event-stream message."""


class IpcServiceError(NucleusError):
    """Raised by an operation handler; the client receives it as an application error
    whose ``service-model-type`` is ``shape`` (e.g. ``aws.greengrass#UnauthorizedError``)."""

    def __init__(self, shape: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.shape = shape
        self.message = message
        self.fields = fields

    def payload(self) -> dict[str, Any]:
        return {"message": self.message, **self.fields}


def unauthorized(message: str) -> IpcServiceError:
    return IpcServiceError("aws.greengrass#UnauthorizedError", message)


def invalid_arguments(message: str) -> IpcServiceError:
    return IpcServiceError("aws.greengrass#InvalidArgumentsError", message)


def resource_not_found(message: str, **fields: Any) -> IpcServiceError:
    return IpcServiceError("aws.greengrass#ResourceNotFoundError", message, **fields)


def service_error(message: str) -> IpcServiceError:
    return IpcServiceError("aws.greengrass#ServiceError", message)
