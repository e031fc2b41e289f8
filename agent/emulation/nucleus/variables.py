"""Recipe variables: how one is written, and filling them in.

A lifecycle script may use ``{namespace:key}`` and ``{Component:namespace:key}``, read with
the nucleus's own patterns (its KernelConfigResolver): the component ``[.\\w-]+``, the
namespace ``[.\\w]+``, the key anything but ``:`` and braces. The nucleus fills in
``{iot:thingName}``, ``{kernel:rootPath}``, ``{artifacts:path}``,
``{artifacts:decompressedPath}``, ``{work:path}`` and ``{configuration:/json/pointer}``
(from the component's live configuration), and the ``artifacts``, ``work`` and
``configuration`` forms of a *direct* dependency: ``{com.example.Dep:artifacts:path}``,
``{com.example.Dep:configuration:/port}``. A configuration value becomes its text: strings
and numbers as they are, ``true``, ``false``, ``null``, objects and lists as compact JSON.

Two ways to fill them in:

* :func:`resolve_variables`, strictly, for the lifecycle steps this nucleus runs. A real
  nucleus leaves a variable it cannot resolve as written, and the script then fails in some
  puzzling way; this nucleus refuses the step instead with an UnresolvedVariableError
  naming the variable, before any process starts.
* :func:`interpolate`, as a real nucleus does: a variable it cannot resolve stays as
  written (used for ``{iot:thingName}`` in configuration).

The recipe checker (:mod:`agent.greengrass.variables`) reads variables with
:func:`find_variables` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.emulation.nucleus.errors import RecipeError

_VARIABLE = re.compile(
    r"\{(?:(?P<component>[.\w-]+):)?(?P<namespace>[.\w]+):(?P<key>[^:{}]+)\}")
CONFIGURATION = "configuration"  # its key is a JSON pointer into the configuration
# The keys of the other namespaces; a dependency's variables are only its paths.
PATH_KEYS: Mapping[str, tuple[str, ...]] = {
    "artifacts": ("path", "decompressedPath"), "work": ("path",)}
SYSTEM_KEYS: Mapping[str, tuple[str, ...]] = {
    **PATH_KEYS, "kernel": ("rootPath",), "iot": ("thingName",)}
NAMESPACES = (*SYSTEM_KEYS, CONFIGURATION)


@dataclass(frozen=True)
class Variable:
    """One ``{[component:]namespace:key}`` at ``start:end`` of a text."""

    text: str  # as written, braces included
    component: str | None
    namespace: str
    key: str
    start: int
    end: int

    @classmethod
    def of(cls, match: re.Match[str]) -> Variable:
        return cls(match.group(0), match.group("component"), match.group("namespace"),
                   match.group("key"), match.start(), match.end())

    @property
    def name(self) -> str:
        """Without the braces: ``com.example.Dep:artifacts:path``."""
        return self.text[1:-1]

    @property
    def known(self) -> bool:
        """Whether the nucleus has such a variable (whatever the pointer of a
        ``configuration`` one): ``kernel`` and ``iot`` are only a component's own."""
        if self.namespace == CONFIGURATION:
            return True
        keys = SYSTEM_KEYS if self.component is None else PATH_KEYS
        return self.key in keys.get(self.namespace, ())


def find_variables(text: str) -> Iterator[Variable]:
    """Every ``{[component:]namespace:key}`` in ``text``, known or not, in order."""
    return (Variable.of(match) for match in _VARIABLE.finditer(text))


def _substitute(text: str, replace: Callable[[Variable], str]) -> str:
    return _VARIABLE.sub(lambda match: replace(Variable.of(match)), text)


def lookup_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901) in ``document``; ``KeyError`` if none."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    value = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, Mapping) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise KeyError(pointer)
    return value


def configuration_text(value: Any) -> str:
    """A configuration value as the nucleus writes it into a script: scalars as text
    (``null``, ``true``), objects and lists as compact JSON with sorted keys."""
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


# ---- strictly, for the lifecycle steps this nucleus runs --------------------------------


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


def _resolve(variable: Variable, scope: VariableScope) -> str:
    if variable.namespace not in NAMESPACES:
        return variable.text  # not a variable of the nucleus: shell braces and the like
    component, key = variable.component, variable.key
    owner = component or scope.component

    def fail(why: str) -> UnresolvedVariableError:
        return UnresolvedVariableError(
            f"{scope.component}: cannot resolve {variable.text}: {why}",
            component=scope.component, variable=variable.text)

    if component is not None and component not in scope.paths:
        raise fail(f"{component} is not a direct dependency of {scope.component} "
                   "deployed on this nucleus")
    if not variable.known:
        raise fail("unknown variable")
    if variable.namespace == CONFIGURATION:
        try:
            return configuration_text(lookup_pointer(scope.configuration(owner), key))
        except KeyError:
            raise fail(f"{owner} has no configuration at {key!r}") from None
    paths = scope.paths[owner]
    return str({("artifacts", "path"): paths.artifacts,
                ("artifacts", "decompressedPath"): paths.decompressed,
                ("work", "path"): paths.work, ("kernel", "rootPath"): scope.root_dir,
                ("iot", "thingName"): scope.thing_name}[(variable.namespace, key)])


def resolve_variables(text: str, scope: VariableScope) -> str:
    """``text`` with every recipe variable filled in (UnresolvedVariableError otherwise)."""
    return _substitute(text, lambda variable: _resolve(variable, scope))


# ---- as a real nucleus does -------------------------------------------------------------


def interpolate(text: str, variables: Mapping[str, str], *,
                configuration: Mapping[str, Any] | None = None,
                configurations: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Replace the recipe variables that ``variables`` names (``{iot:thingName}``,
    ``{work:path}``, ``{com.example.Dep:artifacts:path}``...); ``{configuration:/ptr}``
    also resolves in ``configuration`` (this component's) and ``{Dep:configuration:/ptr}``
    in ``configurations[Dep]``. Unknown ones stay as written, as a real nucleus leaves them."""
    def replace(variable: Variable) -> str:
        if not variable.known:
            return variable.text
        if variable.name in variables:
            return variables[variable.name]
        if variable.namespace == CONFIGURATION:
            component = variable.component
            source = configuration if component is None else (configurations or {}).get(component)
            if source is not None:
                try:
                    return configuration_text(lookup_pointer(source, variable.key))
                except KeyError:
                    pass
        return variable.text

    return _substitute(text, replace)


def interpolate_tree(value: Any, variables: Mapping[str, str]) -> Any:
    """:func:`interpolate` on every string in a nested mapping/list."""
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, dict):
        return {k: interpolate_tree(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, variables) for v in value]
    return value
