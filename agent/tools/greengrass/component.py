"""``edge-agent package component``: the agent and its first model as Greengrass components.

Writes, for each component, the layout of the Greengrass Development Kit (GDK)::

    OUT/<Component>/gdk-config.json        component name, author, version, build, publish
    OUT/<Component>/recipe.yaml            the template from recipes/ (GDK's project recipe)
    OUT/<Component>/greengrass-build/recipes/<Component>-<version>.yaml   one per version
    OUT/<Component>/greengrass-build/recipes/recipe.yaml  the gdk-config version's, for
                                                          ``gdk component publish``
    OUT/<Component>/greengrass-build/artifacts/<Component>/<version>/...  its artifacts
    OUT/greengrass-local/recipes/, artifacts/   every component's recipes and artifacts
                                                (hard links), for one local deployment

* ``com.edgeinference.Agent``: the agent's wheel and ``install-agent.sh``.
* ``com.edgeinference.Model.<name>``: one version per model version (``digits`` v1 ->
  ``1.0.0``) holding a signed package per artifact of that model directory (every Neo
  target's real-architecture build, and on amd64 also the x86_64 builds of the emulated
  boards, so a laptop emulating a Raspberry Pi or a Jetson finds its package) and
  ``testset.npz``, grouped by platform (x86_64 -> amd64, aarch64, armv7l -> arm).

Written recipes (:mod:`~agent.tools.greengrass.component_recipes`: artifact URIs and digests)
are checked with :func:`~agent.tools.greengrass.recipe_check.check_recipe_file` before anything
is moved into ``OUT``: a failure leaves ``OUT`` as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError
from agent.core.model_layout import TESTSET, list_artifacts, read_model_info
from agent.tools.greengrass.component_options import (
    DEFAULT_RECIPES,
    FILE_URIS,
    PLACEHOLDER_BASE,
    ComponentOptions,
)
from agent.tools.greengrass.component_recipes import agent_recipe, copy_data, model_recipe
from agent.tools.greengrass.gdk import (
    LOCAL_DEPLOYMENT,
    artifacts_dir,
    build_wheel,
    local_deployment,
    version_key,
    wheel_version,
    write_project,
    write_recipe,
)
from agent.tools.greengrass.recipe import Recipe, load_recipe_data
from agent.tools.greengrass.recipe_check import AGENT_COMPONENT, check_recipe_file
from agent.tools.packaging.build import build_package
from agent.wire.signing import Signer

INSTALL_SCRIPT = "install-agent.sh"

__all__ = ["DEFAULT_RECIPES", "FILE_URIS", "INSTALL_SCRIPT", "PLACEHOLDER_BASE",
           "ComponentOptions", "WrittenComponent", "build_components", "find_model_dirs"]


@dataclass(frozen=True)
class WrittenComponent:
    """One component written into the output folder (paths where they are now)."""

    name: str
    folder: Path
    versions: tuple[str, ...]
    recipes: tuple[Path, ...]
    artifacts: tuple[Path, ...]


def build_components(options: ComponentOptions,
                     log: Callable[[str], None] = lambda _m: None) -> list[WrittenComponent]:
    """Build the agent and model components into ``options.out``; what was written."""
    agent_data = _template(options.recipes / f"{AGENT_COMPONENT}.yaml")
    model_name = next((d for d in agent_data.get("ComponentDependencies", {})
                       if d.startswith("com.edgeinference.Model.")), None)
    if model_name is None:
        raise ConfigError(f"{AGENT_COMPONENT} template: no com.edgeinference.Model.* dependency")
    model_data = _template(options.recipes / f"{model_name}.yaml")
    models = find_model_dirs(options.models, model_name.rsplit(".", 1)[1],
                             options.model_versions)
    signer = Signer.from_file(options.key, key_id=options.key_id)
    if options.wheel is not None:
        wheel_version(options.wheel)
    if not (options.uri_base in (PLACEHOLDER_BASE, FILE_URIS)
            or options.uri_base.startswith("s3://")):
        raise ConfigError(f"--uri-base {options.uri_base!r}: give s3://BUCKET[/PREFIX] or file")
    if options.out.exists() and not options.out.is_dir():
        raise ConfigError(f"--out {options.out}: not a folder")
    created = not options.out.exists()
    try:
        options.out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".component-build-", dir=options.out))
    except OSError as err:
        raise ConfigError(f"cannot write to {options.out}: {err.strerror or err}") from err
    try:
        built = _build(options, stage, agent_data, model_name, model_data, models, signer, log)
        local_deployment(stage, [c.name for c in built])
        for name in [c.name for c in built] + [LOCAL_DEPLOYMENT]:
            target = options.out / name
            if target.exists():
                target.rename(stage / f"{name}.old")
            (stage / name).rename(target)
        return built
    except OSError as err:
        _discard(stage, options.out if created else None)
        raise ConfigError(f"writing the components to {options.out}: {err}") from err
    except BaseException:
        _discard(stage, options.out if created else None)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _discard(stage: Path, out: Path | None) -> None:
    shutil.rmtree(stage, ignore_errors=True)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


def find_model_dirs(models: Path, name: str, versions: tuple[int, ...]) -> dict[int, Path]:
    """The model directory of each wanted version of model ``name`` (not its bad builds)."""
    if not models.is_dir():
        raise ConfigError(f"--models {models}: no such folder (build the models with "
                          "`edge-agent models build`)")
    found: dict[int, Path] = {}
    for path in sorted(p for p in models.iterdir() if (p / "model.json").is_file()):
        info = read_model_info(path)
        if info.name == name and info.variant is None and info.version.isdigit():
            found[int(info.version)] = path
    wanted = versions or tuple(sorted(found))
    missing = [v for v in wanted if v not in found]
    if not wanted or missing:
        raise ConfigError(f"{models}: no {name} model for version(s) "
                          f"{', '.join(map(str, missing)) or 'any'} (has: "
                          f"{', '.join(map(str, sorted(found))) or 'none'})")
    for version in wanted:
        if not (found[version] / TESTSET).is_file():
            raise ConfigError(f"{found[version]}: no {TESTSET}")
    return {v: found[v] for v in sorted(set(wanted))}


def _template(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe template {path}: no such file (pass --recipes DIR)")
    data = load_recipe_data(path)
    Recipe.parse(data, source=str(path))
    return copy_data(data)


def _build(options: ComponentOptions, stage: Path, agent_data: dict[str, Any],
           model_name: str, model_data: dict[str, Any], models: dict[int, Path],
           signer: Signer, log: Callable[[str], None]) -> list[WrittenComponent]:
    model_recipes: dict[str, Path] = {}
    written = []
    for number, model_dir in models.items():
        version = f"{number}.0.0"
        files = artifacts_dir(stage, model_name, version)
        log(f"{model_name} {version}: signing the packages of {model_dir.name}")
        for artifact, _ in list_artifacts(model_dir):
            build_package(model_dir, artifact, signer=signer, out_dir=files, version=number)
        shutil.copyfile(model_dir / TESTSET, files / TESTSET)
        recipe = model_recipe(model_data, model_name, version, model_dir, files, options)
        model_recipes[version] = write_recipe(stage, model_name, version, recipe)
    written.append(_finish(options, stage, model_name, model_data, model_recipes))

    files = artifacts_dir(stage, AGENT_COMPONENT, "pending")
    wheel = _wheel(options, files, log)
    agent_version = wheel_version(wheel)
    files = files.rename(files.parent / agent_version)
    shutil.copyfile(options.recipes / INSTALL_SCRIPT, files / INSTALL_SCRIPT)
    recipe = agent_recipe(agent_data, model_name, agent_version, files, sorted(models),
                          options, signer)
    agent_path = write_recipe(stage, AGENT_COMPONENT, agent_version, recipe)
    written.insert(0, _finish(options, stage, AGENT_COMPONENT, agent_data,
                              {agent_version: agent_path}))

    checks = {"require_digests": True, "forbid_yaml_aliases": True,
              "allow_file_uris": options.uri_base == FILE_URIS}
    for version, path in model_recipes.items():
        check_recipe_file(path, artifacts_dir=path.parents[1] / "artifacts" / model_name
                          / version, **checks)
    for model_path in model_recipes.values():  # the dependency admits every model version
        model = Recipe.parse(load_recipe_data(model_path), source=str(model_path))
        check_recipe_file(agent_path, dependencies={model_name: model}, artifacts_dir=files,
                          **checks)
    return written


def _finish(options: ComponentOptions, stage: Path, name: str, template: dict[str, Any],
            recipes: dict[str, Path]) -> WrittenComponent:
    write_project(stage / name, name=name, template=options.recipes / f"{name}.yaml",
                  recipes=recipes, author=template.get("ComponentPublisher", "edge-inference"),
                  command=options.command or ("edge-agent", "package", "component"),
                  bucket=options.bucket, region=options.region)
    files = stage / name / "greengrass-build" / "artifacts" / name
    return WrittenComponent(
        name=name, folder=options.out / name, versions=tuple(sorted(recipes, key=version_key)),
        recipes=tuple(options.out / recipes[v].relative_to(stage)
                      for v in sorted(recipes, key=version_key)),
        artifacts=tuple(options.out / p.relative_to(stage)
                        for p in sorted(files.rglob("*")) if p.is_file()))


def _wheel(options: ComponentOptions, files: Path, log: Callable[[str], None]) -> Path:
    if options.wheel is not None:
        return Path(shutil.copy2(options.wheel, files / options.wheel.name))
    log(f"{AGENT_COMPONENT}: building the agent wheel")
    return build_wheel(files)
