"""Recipe-variable interpolation: how a variable is written, which ones the nucleus has, and
filling them in.

A lifecycle script may use ``{namespace:key}`` and ``{Component:namespace:key}``, read with
the nucleus's own patterns (its KernelConfigResolver): the component ``[.\\w-]+``, the
namespace ``[.\\w]+``, the key anything but ``:`` and braces. The nucleus fills in
``{iot:thingName}``, ``{kernel:rootPath}``, ``{artifacts:path}``,
``{artifacts:decompressedPath}``, ``{work:path}`` and ``{configuration:/json/pointer}``
(from the component's live configuration), and the ``artifacts``, ``work`` and
``configuration`` forms of a *direct* dependency: ``{com.example.Dep:artifacts:path}``,
``{com.example.Dep:configuration:/port}``. A configuration value becomes its text: strings
and numbers as they are, ``true``, ``false``, ``null``, objects and lists as compact JSON.

:func:`interpolate` fills them in as a real nucleus does: a variable it cannot resolve stays
as written (used for ``{iot:thingName}`` in configuration). The recipe checker
(:mod:`agent.tools.greengrass.variable_check`) reads variables with :func:`find_variables`;
the emulated nucleus (:mod:`agent.tools.nucleus.strict_variables`) resolves the variables of
the steps it runs strictly, with :func:`substitute`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

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


def substitute(text: str, replace: Callable[[Variable], str]) -> str:
    """``text`` with each recipe variable replaced by ``replace(variable)``."""
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

    return substitute(text, replace)


def interpolate_tree(value: Any, variables: Mapping[str, str]) -> Any:
    """:func:`interpolate` on every string in a nested mapping/list."""
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, dict):
        return {k: interpolate_tree(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, variables) for v in value]
    return value
