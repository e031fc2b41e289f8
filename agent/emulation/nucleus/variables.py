"""Recipe variables in lifecycle scripts, resolved strictly.

A component's lifecycle may use ``{iot:thingName}``, ``{kernel:rootPath}``,
``{artifacts:path}``, ``{artifacts:decompressedPath}``, ``{work:path}`` and
``{configuration:/json/pointer}`` (from the component's live configuration), and the
same ``artifacts``, ``work`` and ``configuration`` forms of a *direct* dependency:
``{com.example.Dep:artifacts:path}``, ``{com.example.Dep:configuration:/port}``.

A real nucleus leaves a variable it cannot resolve as written, and the script then fails
in some puzzling way; this nucleus refuses the step instead with an
UnresolvedVariableError naming the variable, before any process starts.

A configuration value becomes its text: strings and numbers as they are, ``true``,
``false``, ``null``, and objects and lists as compact JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.emulation.nucleus.errors import RecipeError

_VARIABLE = re.compile(
    r"\{(?:(?P<component>[^{}:\s]+):)?(?P<namespace>artifacts|work|configuration|kernel|iot)"
    r":(?P<key>[^{}]*)\}")


class UnresolvedVariableError(RecipeError):
    """A recipe variable this nucleus cannot fill in; names the variable and component."""

    def __init__(self, message: str, *, component: str, variable: str) -> None:
        super().__init__(message)
        self.component = component
        self.variable = variable


@dataclass(frozen=True)
class ComponentPaths:
    artifacts: Path
    decompressed: Path
    work: Path


@dataclass(frozen=True)
class VariableScope:
    """What the variables of one component's lifecycle can see."""

    component: str
    thing_name: str
    root_dir: Path
    paths: Mapping[str, ComponentPaths]  # the component itself and its direct dependencies
    configuration: Callable[[str], Any]  # component name -> its whole configuration


def json_pointer(document: Any, pointer: str) -> Any:
    """The node at an RFC 6901 pointer; KeyError when there is none."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = document
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise KeyError(pointer)
    return node


def as_text(value: Any) -> str:
    """A configuration value as a script sees it: scalars as text (``null``, ``true``),
    objects and lists as compact JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _resolve(match: re.Match[str], scope: VariableScope) -> str:
    component = match.group("component")
    namespace, key = match.group("namespace"), match.group("key")
    variable = match.group(0)
    owner = component or scope.component

    def fail(why: str) -> UnresolvedVariableError:
        return UnresolvedVariableError(f"{scope.component}: cannot resolve {variable}: {why}",
                                       component=scope.component, variable=variable)

    if component is not None and component not in scope.paths:
        raise fail(f"{component} is not a direct dependency of {scope.component} "
                   "deployed on this nucleus")
    if namespace in ("kernel", "iot"):
        if component is None and (namespace, key) == ("kernel", "rootPath"):
            return str(scope.root_dir)
        if component is None and (namespace, key) == ("iot", "thingName"):
            return scope.thing_name
        raise fail("unknown variable")
    if namespace == "configuration":
        try:
            return as_text(json_pointer(scope.configuration(owner), key))
        except KeyError:
            raise fail(f"{owner} has no configuration at {key!r}") from None
    paths = scope.paths[owner]
    found = {("artifacts", "path"): paths.artifacts,
             ("artifacts", "decompressedPath"): paths.decompressed,
             ("work", "path"): paths.work}.get((namespace, key))
    if found is None:
        raise fail("unknown variable")
    return str(found)


def resolve_variables(text: str, scope: VariableScope) -> str:
    """``text`` with every recipe variable filled in (UnresolvedVariableError otherwise)."""
    return _VARIABLE.sub(lambda m: _resolve(m, scope), text)
