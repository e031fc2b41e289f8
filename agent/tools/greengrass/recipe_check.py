"""Check a Greengrass component recipe before it is published or deployed.

:func:`check_recipe` finds what would make a deployment fail or behave differently from
what the recipe seems to say, and raises one :class:`RecipeCheckError` listing every
problem, each naming its key path (``Manifests[1].Lifecycle.run: ...``):

* the recipe matches the recipe reference (fields, types, a semantic ``ComponentVersion``,
  npm-style ``VersionRequirement`` ranges);
* a manifest exists for each platform the component must run on (linux amd64, aarch64, arm);
* every recipe variable in the lifecycle resolves: ``{artifacts:path}``,
  ``{artifacts:decompressedPath}`` (needs a ``ZIP`` artifact), ``{work:path}``,
  ``{kernel:rootPath}``, ``{iot:thingName}``, ``{configuration:/pointer}`` (the pointer exists
  in ``DefaultConfiguration``) and ``{Dep:...}`` only for a direct dependency; a file a
  script names under ``{artifacts:path}/`` is one of that manifest's artifacts;
* ``DefaultConfiguration`` uses no variable but ``{iot:thingName}`` (the only one the
  nucleus's ``interpolateComponentConfiguration`` fills in);
* artifacts use a scheme the nucleus downloads, have unique file names and, with
  ``require_digests``, a ``SHA-256`` ``Digest`` (base64, as the nucleus compares it) that
  matches the file when ``artifacts_dir`` is given;
* with the dependencies' recipes: each ``VersionRequirement`` admits the dependency's
  version, and an artifact read through ``{Dep:artifacts:path}`` is readable by ``ALL``;
* for the agent component (:mod:`agent.tools.greengrass.agent_rules`): its settings and its
  ``accessControl``, and the token exchange service among its dependencies when it uploads
  captures to S3.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.core.errors import AgentError, ConfigError
from agent.tools.greengrass.recipe import Recipe, load_recipe_data
from agent.tools.greengrass.variable_check import (
    configuration_problems,
    key_path,
    lifecycle_problems,
    permission_problems,
)
from agent.tools.greengrass.versions import Version, parse_range, satisfies

AGENT_COMPONENT = "com.edgeinference.Agent"
REQUIRED_PLATFORMS: tuple[tuple[str, str], ...] = (
    ("linux", "amd64"), ("linux", "aarch64"), ("linux", "arm"))
DOWNLOAD_SCHEMES = ("s3", "greengrass", "docker")  # what the nucleus's downloaders take
DIGEST_ALGORITHM = "SHA-256"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")

__all__ = ["AGENT_COMPONENT", "REQUIRED_PLATFORMS", "Problem", "RecipeCheckError",
           "check_recipe", "check_recipe_file", "find_problems"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, at a key path such as ``Manifests[1].Lifecycle.run``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RecipeCheckError(AgentError):
    """A recipe failed :func:`check_recipe`; ``problems`` lists why."""

    def __init__(self, component: str, problems: list[Problem]) -> None:
        self.component = component
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"{component}: {len(problems)} recipe problem(s):\n  {lines}")


def find_problems(recipe: Recipe | Mapping[str, Any], *,
                  dependencies: Mapping[str, Recipe] | None = None,
                  platforms: tuple[tuple[str, str], ...] = REQUIRED_PLATFORMS,
                  agent: bool | None = None, require_digests: bool = False,
                  artifacts_dir: Path | None = None,
                  allow_file_uris: bool = False) -> list[Problem]:
    """Every problem of ``recipe`` (parsed, or the raw mapping of a recipe file).

    ``dependencies`` are the recipes of components it depends on, by name, where known;
    ``agent`` applies the agent's rules (default: when it is the agent component);
    ``artifacts_dir`` holds the artifact files, to compare against their digests;
    ``allow_file_uris`` accepts ``file://`` artifacts, which only the emulated nucleus reads.
    """
    if not isinstance(recipe, Recipe):
        try:
            recipe = Recipe.model_validate(recipe)
        except ValidationError as err:
            return _schema_problems(err)
    dependencies = dependencies or {}
    problems = _metadata_problems(recipe) + _platform_problems(recipe, platforms)
    found = lifecycle_problems(recipe, dependencies) + configuration_problems(recipe)
    problems += _artifact_problems(recipe, require_digests=require_digests,
                                   artifacts_dir=artifacts_dir, allow_file_uris=allow_file_uris)
    problems += _dependency_problems(recipe, dependencies)
    found += permission_problems(recipe, dependencies)
    if agent if agent is not None else recipe.component_name == AGENT_COMPONENT:
        from agent.tools.greengrass.agent_rules import agent_problems

        found += agent_problems(recipe.default_configuration(),
                                recipe.component_dependencies)
    return problems + [Problem(where, message) for where, message in found]


def check_recipe(recipe: Recipe | Mapping[str, Any], **options: Any) -> Recipe:
    """``recipe`` parsed, or :class:`RecipeCheckError` with every problem; the options
    are :func:`find_problems`'."""
    problems = find_problems(recipe, **options)
    name = recipe.component_name if isinstance(recipe, Recipe) else \
        str(recipe.get("ComponentName", "recipe"))
    if problems:
        raise RecipeCheckError(name, problems)
    return recipe if isinstance(recipe, Recipe) else Recipe.model_validate(recipe)


def check_recipe_file(path: str | Path, *, forbid_yaml_aliases: bool = False,
                      **options: Any) -> Recipe:
    """:func:`check_recipe` on a YAML or JSON file. ``forbid_yaml_aliases`` also refuses
    YAML anchors and aliases (``*lifecycle``): the nucleus reads recipes with Jackson,
    which does not resolve them, so a recipe to deploy must write each value out."""
    path = Path(path)
    data = load_recipe_data(path)
    if not isinstance(data, Mapping):
        raise RecipeCheckError(str(path), [Problem("(file)", "a recipe is a mapping")])
    problems = find_problems(data, **options)
    if forbid_yaml_aliases and path.suffix != ".json":
        aliases = sorted({e.anchor for e in yaml.parse(path.read_text())
                          if isinstance(e, yaml.AliasEvent) and e.anchor})
        if aliases:
            problems.insert(0, Problem("(file)", "uses YAML aliases " + ", ".join(
                f"*{a}" for a in aliases) + ", which the nucleus's recipe parser does not "
                "resolve; write each value out"))
    if problems:
        raise RecipeCheckError(str(data.get("ComponentName", path)), problems)
    return Recipe.model_validate(data)


def _schema_problems(err: ValidationError) -> list[Problem]:
    found: dict[str, Problem] = {}
    for error in err.errors():
        loc = [p for p in error["loc"] if p not in ("str", "LifecycleStep")]
        problem = Problem(key_path(loc), error["msg"])
        found.setdefault(str(problem), problem)
    return list(found.values())


def _metadata_problems(recipe: Recipe) -> list[Problem]:
    problems = []
    if not _NAME.fullmatch(recipe.component_name):
        problems.append(Problem("ComponentName", "1-128 of [A-Za-z0-9_.-]"))
    try:
        Version.parse(recipe.component_version)
    except ConfigError as err:
        problems.append(Problem("ComponentVersion", str(err)))
    return problems


def _platform_problems(recipe: Recipe, platforms: tuple[tuple[str, str], ...]) -> list[Problem]:
    return [Problem("Manifests", f"missing manifest for {os}/{arch}")
            for os, arch in platforms
            if not any(m.platform.matches(os=os, architecture=arch) for m in recipe.manifests)]


def _artifact_problems(recipe: Recipe, *, require_digests: bool, artifacts_dir: Path | None,
                       allow_file_uris: bool) -> list[Problem]:
    schemes = DOWNLOAD_SCHEMES + (("file",) if allow_file_uris else ())
    problems = []
    for i, manifest in enumerate(recipe.manifests):
        seen: set[str] = set()
        for j, artifact in enumerate(manifest.artifacts):
            where = f"Manifests[{i}].Artifacts[{j}]"
            if artifact.scheme not in schemes:
                problems.append(Problem(f"{where}.URI", f"scheme {artifact.scheme or '(none)'!r} "
                                        f"is not one the nucleus downloads "
                                        f"({', '.join(schemes)})"))
            if artifact.file_name in seen:
                problems.append(Problem(f"{where}.URI", f"{artifact.file_name} twice in one "
                                        "manifest (file names must be unique)"))
            seen.add(artifact.file_name)
            message = _digest_problem(artifact.digest, artifact.algorithm, require_digests)
            if message:
                problems.append(Problem(f"{where}.Digest", message))
            elif artifacts_dir is not None and artifact.digest is not None:
                path = artifacts_dir / artifact.file_name
                if not path.is_file():
                    problems.append(Problem(f"{where}.URI", f"no file {path}"))
                elif artifact_digest(path) != artifact.digest:
                    problems.append(Problem(f"{where}.Digest", f"does not match {path}"))
    return problems


def _digest_problem(digest: str | None, algorithm: str | None, required: bool) -> str | None:
    if digest is None and algorithm is None:
        return f"missing ({DIGEST_ALGORITHM}, base64)" if required else None
    if algorithm != DIGEST_ALGORITHM:
        return f"Algorithm must be {DIGEST_ALGORITHM}, got {algorithm!r}"
    try:
        raw = base64.b64decode(digest or "", validate=True)
    except ValueError:
        raw = b""
    if len(raw) != hashlib.sha256().digest_size:
        return f"{digest!r} is not a base64 {DIGEST_ALGORITHM} digest (the nucleus compares " \
               "base64, not hex)"
    return None


def artifact_digest(path: Path, hash_name: str = "sha256") -> str:
    """A file's ``Digest`` as a recipe carries it: base64 of its hash (``hash_name`` as
    :func:`hashlib.new` names it; SHA-256 unless told)."""
    digest = hashlib.new(hash_name)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def _dependency_problems(recipe: Recipe, dependencies: Mapping[str, Recipe]) -> list[Problem]:
    problems = []
    for name, dependency in recipe.component_dependencies.items():
        where = key_path(["ComponentDependencies", name, "VersionRequirement"])
        try:
            parse_range(dependency.version_requirement)
        except ConfigError as err:
            problems.append(Problem(where, str(err)))
            continue
        known = dependencies.get(name)
        if known is not None and not satisfies(known.component_version,
                                               dependency.version_requirement):
            problems.append(Problem(where, f"{dependency.version_requirement!r} does not admit "
                                           f"{name} {known.component_version}"))
    return problems


