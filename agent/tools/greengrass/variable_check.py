"""Recipe variables, checked the way the nucleus resolves them.

The nucleus interpolates ``{namespace:key}`` and ``{Component:namespace:key}`` in lifecycle
scripts: ``artifacts`` (``path``, ``decompressedPath``), ``work`` (``path``), ``kernel``
(``rootPath``), ``iot`` (``thingName``) and ``configuration`` (a JSON pointer). A variable
of another component resolves only when that component is a direct dependency; one that
does not resolve is left in the script as written, so the script runs with a literal
``{configuration:/nope}`` in it. In configuration, ``interpolateComponentConfiguration``
fills in ``{iot:thingName}`` only. Variables are read as the nucleus reads them
(:func:`agent.tools.greengrass.interpolation.find_variables`), but not after a ``$``:
``${VAR:-x}`` is the shell's. Each function returns ``(key path, message)`` pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from agent.tools.greengrass.interpolation import (
    CONFIGURATION,
    PATH_KEYS,
    SYSTEM_KEYS,
    Variable,
    find_variables,
    lookup_pointer,
)
from agent.tools.greengrass.recipe import STEP_NAMES, Lifecycle, Manifest, Recipe

Found = list[tuple[str, str]]
_FILE_NAME = re.compile(r"/([^/\s\"'`;|&<>()$]+)")  # after {artifacts:path}


def _variables(text: str) -> list[Variable]:
    """The recipe variables in ``text``; ``${VAR:-x}`` is the shell's, not a variable."""
    return [v for v in find_variables(text) if not text[:v.start].endswith("$")]


def _artifact_paths(text: str) -> list[Variable]:
    """The ``{[Component:]artifacts:path|decompressedPath}`` variables in ``text``."""
    return [v for v in _variables(text)
            if v.namespace == "artifacts" and v.key in PATH_KEYS["artifacts"]]


def _file_refs(text: str) -> Iterator[tuple[str, str, str]]:
    """(component or "", path key, file name) of each ``{artifacts:path}/file`` in ``text``."""
    end = 0
    for variable in _artifact_paths(text):
        name = _FILE_NAME.match(text, variable.end) if variable.start >= end else None
        if name is not None:
            end = name.end()
            yield variable.component or "", variable.key, name.group(1)


def key_path(parts: Iterable[str | int]) -> str:
    """``["Manifests", 1, "Lifecycle"]`` -> ``Manifests[1].Lifecycle``; a key that is not
    a plain word is quoted: ``accessControl["aws.greengrass.ipc.mqttproxy"]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text or "(recipe)"


def _under(base: str, *parts: str | int) -> str:
    tail = key_path(parts)
    return base + (tail if tail.startswith("[") else f".{tail}")


def lifecycle_strings(base: str, lifecycle: Lifecycle) -> Iterator[tuple[str, str]]:
    """Every string of a manifest's lifecycle that the nucleus interpolates, with its path."""
    for key, value in lifecycle.setenv.items():
        yield _under(base, "Setenv", key), value
    for name in STEP_NAMES:
        step = getattr(lifecycle, name)
        if isinstance(step, str):
            yield f"{base}.{name}", step
        elif step is not None:
            yield f"{base}.{name}.Script", step.script
            for key, value in step.setenv.items():
                yield _under(base, name, "Setenv", key), value
            if step.skipif:
                yield f"{base}.{name}.Skipif", step.skipif


def tree_strings(base: list[str | int], value: Any) -> Iterator[tuple[str, str]]:
    """Every string in a nested mapping/list, with its key path."""
    if isinstance(value, str):
        yield key_path(base), value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from tree_strings([*base, str(key)], item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from tree_strings([*base, index], item)


def lifecycle_problems(recipe: Recipe, dependencies: Mapping[str, Recipe]) -> Found:
    """Variables in the lifecycle that do not resolve, and files named under
    ``{artifacts:path}/`` that are not artifacts."""
    places: list[tuple[str, str, Manifest | None]] = [
        (where, text, manifest) for i, manifest in enumerate(recipe.manifests)
        if manifest.lifecycle is not None
        for where, text in lifecycle_strings(f"Manifests[{i}].Lifecycle", manifest.lifecycle)]
    places += [(where, text, None) for where, text in tree_strings(["Lifecycle"],
                                                                     recipe.lifecycle)]
    found: Found = []
    for where, text, manifest in places:
        for variable in _variables(text):
            message = _variable_problem(recipe, dependencies, variable)
            if message:
                found.append((where, f"{variable.text} {message}"))
        for component, kind, name in _file_refs(text):
            source = recipe if not component else dependencies.get(component)
            if source is not None:
                message = _file_problem(source, manifest if not component else None,
                                        component, kind, name)
                if message:
                    found.append((where, message))
    return found


def _variable_problem(recipe: Recipe, dependencies: Mapping[str, Recipe],
                      variable: Variable) -> str | None:
    component, namespace, key = variable.component, variable.namespace, variable.key
    owner: Recipe | None = recipe
    if component is not None:
        if component not in recipe.component_dependencies:
            return (f"does not resolve: {component} is not in ComponentDependencies "
                    "(only direct dependencies resolve)")
        owner = dependencies.get(component)
        if namespace == CONFIGURATION:
            return None if owner is None else _pointer_problem(
                owner.default_configuration(), key, f"{component}'s DefaultConfiguration")
    elif namespace == CONFIGURATION:
        return _pointer_problem(recipe.default_configuration(), key, "DefaultConfiguration")
    if namespace not in SYSTEM_KEYS:
        return f"does not resolve: unknown namespace {namespace!r}"
    if component is not None and not variable.known:
        return f"does not resolve: {namespace} is only a component's own, not a dependency's"
    if key not in SYSTEM_KEYS[namespace]:
        return f"does not resolve: {namespace} has {', '.join(SYSTEM_KEYS[namespace])}"
    if key == "decompressedPath" and owner is not None and not any(
            a.unarchive == "ZIP" for m in owner.manifests for a in m.artifacts):
        return "names no folder: no artifact has Unarchive: ZIP"
    return None


def _pointer_problem(configuration: Mapping[str, Any], pointer: str, where: str) -> str | None:
    try:
        lookup_pointer(configuration, pointer)
    except KeyError:
        return f"does not resolve: {where} has no {pointer}"
    return None


def _file_problem(source: Recipe, manifest: Manifest | None, component: str, kind: str,
                  name: str) -> str | None:
    manifests = [manifest] if manifest is not None else source.manifests
    artifacts = [a for m in manifests for a in m.artifacts]
    if kind == "path":
        names = sorted({a.file_name for a in artifacts})
    else:
        names = sorted({Path(a.file_name).stem for a in artifacts if a.unarchive == "ZIP"})
    if name in names:
        return None
    owner = component or "this manifest"
    prefix = f"{component}:" if component else ""
    return (f"{{{prefix}artifacts:{kind}}}/{name} is not an artifact of {owner} "
            f"(has: {', '.join(names) or 'none'})")


def configuration_problems(recipe: Recipe) -> Found:
    """Variables in ``DefaultConfiguration`` other than ``{iot:thingName}``."""
    base: list[str | int] = ["ComponentConfiguration", "DefaultConfiguration"]
    return [(where, f"{variable.text} stays as written: only {{iot:thingName}} is "
                    "interpolated in configuration (interpolateComponentConfiguration)")
            for where, text in tree_strings(base, recipe.default_configuration())
            for variable in _variables(text) if variable.name != "iot:thingName"]


def permission_problems(recipe: Recipe, dependencies: Mapping[str, Recipe]) -> Found:
    """The reference: another component reads a dependency's artifacts only when their
    Read (or Execute) permission is ALL."""
    read = {variable.component for m in recipe.manifests if m.lifecycle is not None
            for _, text in lifecycle_strings("", m.lifecycle)
            for variable in _artifact_paths(text) if variable.component is not None}
    return [(f"{name}: Manifests[{i}].Artifacts[{j}].Permission.Read",
             f"must be ALL: {recipe.component_name} reads {artifact.file_name} through "
             f"{{{name}:artifacts:path}}")
            for name in sorted(read & set(dependencies))
            for i, manifest in enumerate(dependencies[name].manifests)
            for j, artifact in enumerate(manifest.artifacts)
            if "ALL" not in (artifact.permission.read, artifact.permission.execute)]
