"""A component's ``accessControl`` configuration: which IPC operations it may perform.

Shape, as in a recipe's ``DefaultConfiguration``::

    accessControl:
      aws.greengrass.ipc.mqttproxy:              # the IPC service being accessed
        com.example.Comp:mqttproxy:1:            # policy id, unique on the device
          policyDescription: ...
          operations: [aws.greengrass#PublishToIoTCore]   # or "*"
          resources: ["edge/{iot:thingName}/metrics"]

Resource matching follows the nucleus's MQTT-style lookup: ``*`` matches any characters
(``/`` included); ``+`` standing for a whole level matches one level; a trailing ``/#``
matches that level and everything below it; ``${*}``, ``${$}`` and ``${?}`` are the
literal characters; ``${iot:thingName}`` (policy variable) and ``{iot:thingName}``
(recipe variable) become the device's thing name. The requested topic - a topic filter
for subscriptions - is matched as a string, so a policy granting ``a/+/c`` lets a
component subscribe to the filter ``a/+/c`` itself.

:meth:`AccessPolicy.check` raises :class:`AccessDeniedError` with the message of the real
nucleus; the emulated nucleus answers it as an IPC ``UnauthorizedError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.errors import AgentError
from agent.tools.greengrass.recipe import RecipeError

MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
PUBSUB = "aws.greengrass.ipc.pubsub"
ANY = "*"
_ESCAPES = {"${*}": "*", "${$}": "$", "${?}": "?"}
_TOKEN = re.compile(r"\$\{[*$?]\}|\*|#|\+|[^*#+$]+|\$")


class AccessDeniedError(AgentError):
    """No policy of the component grants the operation on the resource."""


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    policy_description: str | None = Field(default=None, alias="policyDescription")
    operations: list[str] = Field(min_length=1)
    resources: list[str] = Field(default_factory=lambda: [ANY])


def resource_pattern(resource: str, *, thing_name: str) -> re.Pattern[str]:
    """Compile one policy resource into a regular expression over requested resources."""
    resource = resource.replace("${iot:thingName}", thing_name) \
        .replace("{iot:thingName}", thing_name)
    if "?" in resource.replace("${?}", ""):
        raise RecipeError(f"policy resource {resource!r}: '?' is not a wildcard; write ${{?}}")
    if resource in (ANY, "#"):
        return re.compile(".*", re.DOTALL)
    parts: list[str] = []
    tokens = _TOKEN.findall(resource)
    for index, token in enumerate(tokens):
        before = "".join(tokens[:index])
        after = "".join(tokens[index + 1:])
        whole_level = (not before or before.endswith("/")) and (not after or after.startswith("/"))
        if token in _ESCAPES:
            parts.append(re.escape(_ESCAPES[token]))
        elif token == "*":
            parts.append(".*")
        elif token == "+" and whole_level:
            parts.append("[^/]*")
        elif token == "#" and not after and before.endswith("/"):
            parts[-1] = parts[-1][:-1]  # the level separator before '#' is optional
            parts.append("(?:/.*)?")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class Grant:
    service: str
    policy_id: str
    operations: frozenset[str]
    resources: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def allows(self, operation: str, resource: str) -> bool:
        return (ANY in self.operations or operation in self.operations) and any(
            p.fullmatch(resource) for p in self.patterns)


@dataclass(frozen=True)
class AccessPolicy:
    """The grants one component holds."""

    component: str
    grants: tuple[Grant, ...]

    @classmethod
    def from_configuration(cls, *, component: str, configuration: Mapping[str, Any],
                           thing_name: str) -> AccessPolicy:
        access = configuration.get("accessControl") or {}
        if not isinstance(access, Mapping):
            raise RecipeError(f"{component}: accessControl must be a mapping")
        grants: list[Grant] = []
        for service, policies in access.items():
            if not isinstance(policies, Mapping):
                raise RecipeError(f"{component}: accessControl.{service} must map policy ids")
            for policy_id, raw in policies.items():
                try:
                    body = PolicyBody.model_validate(raw)
                except ValidationError as err:
                    raise RecipeError(f"{component}: policy {policy_id!r}: {err}") from err
                grants.append(Grant(
                    service=service, policy_id=policy_id,
                    operations=frozenset(body.operations), resources=tuple(body.resources),
                    patterns=tuple(resource_pattern(r, thing_name=thing_name)
                                   for r in body.resources)))
        return cls(component=component, grants=tuple(grants))

    def check(self, *, service: str, operation: str, resource: str) -> None:
        """Raise AccessDeniedError, with the message a real nucleus answers in its
        ``UnauthorizedError``, when nothing grants this."""
        if any(g.service == service and g.allows(operation, resource) for g in self.grants):
            return
        raise AccessDeniedError(f"Principal {self.component} is not authorized to perform "
                           f"{service}:{operation} on resource {resource}")


def check_policy_ids_unique(policies: list[AccessPolicy]) -> None:
    seen: dict[str, str] = {}
    for policy in policies:
        for grant in policy.grants:
            owner = seen.setdefault(grant.policy_id, policy.component)
            if owner != policy.component:
                raise RecipeError(f"policy id {grant.policy_id!r} is used by both {owner} and "
                                  f"{policy.component}; Greengrass needs unique policy ids")
