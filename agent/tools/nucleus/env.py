"""The environment a nucleus gives a component process."""

from __future__ import annotations

import os
from collections.abc import Mapping

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"
THING_ENV = "AWS_IOT_THING_NAME"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL


def ipc_env(*, socket_path: str, svcuid: str, thing_name: str, region: str) -> dict[str, str]:
    """Exactly the variables a Greengrass nucleus sets for a component's IPC."""
    return {SOCKET_ENV: socket_path, TOKEN_ENV: svcuid, THING_ENV: thing_name,
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region}


def component_env(*, socket_path: str, svcuid: str, thing_name: str, region: str,
                  base: Mapping[str, str] | None = None,
                  setenv: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment), then the recipe's ``Setenv``, then
    the nucleus's own variables - which a recipe cannot override on a real device either."""
    env = dict(os.environ if base is None else base)
    env.update(setenv or {})
    env.update(ipc_env(socket_path=socket_path, svcuid=svcuid, thing_name=thing_name,
                       region=region))
    return env
