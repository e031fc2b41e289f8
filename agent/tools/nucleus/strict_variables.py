"""Strict recipe-variable resolution, for the lifecycle steps this nucleus runs.

The variables themselves (how one is written, which ones the nucleus has, JSON pointers,
how a configuration value becomes text) are :mod:`agent.tools.greengrass.interpolation`. A
real nucleus leaves a variable it cannot resolve as written, and the script then fails in
some puzzling way; this nucleus refuses the step instead with an UnresolvedVariableError
naming the variable, before any process starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.tools.greengrass.interpolation import (
    CONFIGURATION,
    NAMESPACES,
    Variable,
    configuration_text,
    lookup_pointer,
    substitute,
)
from agent.tools.greengrass.recipe import RecipeError


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
    return substitute(text, lambda variable: _resolve(variable, scope))
