"""IPC authorization: each operation a component calls is checked against its
``accessControl`` (:class:`agent.tools.greengrass.access_policy.AccessPolicy`); a refusal is
answered with the ``aws.greengrass#UnauthorizedError`` a real nucleus sends."""

from __future__ import annotations

from agent.tools.greengrass.access_policy import AccessDeniedError, AccessPolicy
from agent.tools.nucleus.errors import unauthorized


def authorize(policy: AccessPolicy, *, service: str, operation: str, resource: str) -> None:
    """Raise the IPC ``UnauthorizedError`` when nothing in ``policy`` grants this."""
    try:
        policy.check(service=service, operation=operation, resource=resource)
    except AccessDeniedError as err:
        raise unauthorized(str(err)) from err
