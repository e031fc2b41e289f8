"""``edge-agent package component``: the agent and its first model as Greengrass components.

Writes, for each component, the layout of the Greengrass Development Kit (GDK)::

    OUT/<Component>/gdk-config.json        component name, author, version, build, publish
    OUT/<Component>/recipe.yaml            the template from recipes/ naming the model's
                                           component (GDK's project recipe)
    OUT/<Component>/greengrass-build/recipes/<Component>-<version>.yaml   one per version
    OUT/<Component>/greengrass-build/recipes/recipe.yaml  the gdk-config version's, for
                                                          ``gdk component publish``
    OUT/<Component>/greengrass-build/artifacts/<Component>/<version>/...  its artifacts
    OUT/greengrass-local/recipes/, artifacts/   every component's recipes and artifacts
                                                (hard links), for one local deployment

* ``com.edgeinference.Agent``: the agent's wheel and ``install-agent.sh``.
* ``com.edgeinference.Model.<name>``, named after the model (model.json's ``name``; which
  model, versions and platforms: :mod:`~agent.tools.greengrass.component_models`): one
  version per model version (``digits`` v1 -> ``1.0.0``) holding a signed package per
  build of that model directory for the platforms the components cover (each Neo
  target's real-architecture build, and on amd64 also the x86_64 builds of the emulated
  boards, so a laptop emulating a Raspberry Pi or a Jetson finds its package), its ONNX
  package (``<name>-v<N>-onnx.tar.gz``) in the amd64 and aarch64 manifests when the model
  directory has ``onnx/model.onnx`` (a device whose agent runs the onnx backend takes it)
  and ``testset.npz`` when there is one, grouped by platform (x86_64 -> amd64, aarch64,
  armv7l -> arm). Both components have a manifest for exactly those platforms; a platform
  without a build is left out, and ``warn`` says that its devices cannot install them. A
  model only ONNX Runtime can run (no real DLR build) is built for amd64 and aarch64, and
  the agent's recipe defaults to ``backend: onnx``.

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
from agent.core.model_layout import TESTSET
from agent.tools.greengrass.component_models import ModelBuilds, find_model
from agent.tools.greengrass.component_options import (
    DEFAULT_RECIPES,
    FILE_URIS,
    MODEL_SLOT,
    MODEL_TEMPLATE,
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
from agent.tools.packaging.build import build_onnx_package, build_package
from agent.wire.signing import Signer

INSTALL_SCRIPT = "install-agent.sh"

__all__ = ["DEFAULT_RECIPES", "FILE_URIS", "INSTALL_SCRIPT", "PLACEHOLDER_BASE",
           "ComponentOptions", "WrittenComponent", "build_components"]


@dataclass(frozen=True)
class WrittenComponent:
    """One component written into the output folder (paths where they are now)."""

    name: str
    folder: Path
    versions: tuple[str, ...]
    recipes: tuple[Path, ...]
    artifacts: tuple[Path, ...]
    platforms: tuple[str, ...]  # the Greengrass architectures it has a manifest for


def build_components(options: ComponentOptions,
                     log: Callable[[str], None] = lambda _m: None,
                     warn: Callable[[str], None] | None = None) -> list[WrittenComponent]:
    """Build the agent and model components into ``options.out``; what was written.
    ``log`` hears the progress, ``warn`` (default: ``log``) what was left out and why."""
    warn = warn or log
    agent_data = _template(options.recipes / f"{AGENT_COMPONENT}.yaml")
    if MODEL_SLOT not in agent_data.get("ComponentDependencies", {}):
        raise ConfigError(f"recipe template {options.recipes / f'{AGENT_COMPONENT}.yaml'}: no "
                          f"{MODEL_SLOT} dependency (the templates stand for the model "
                          f"component with {MODEL_SLOT}; the build names it after the model)")
    model_data = _template(options.recipes / MODEL_TEMPLATE)
    model = find_model(options.models, options.model, options.model_versions)
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
        built = _build(options, stage, agent_data, model_data, model, signer, log)
        for message in model.left_out:
            warn(message)
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


def _template(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe template {path}: no such file (pass --recipes DIR)")
    data = load_recipe_data(path)
    Recipe.parse(data, source=str(path))
    return copy_data(data)


def _build(options: ComponentOptions, stage: Path, agent_data: dict[str, Any],
           model_data: dict[str, Any], model: ModelBuilds, signer: Signer,
           log: Callable[[str], None]) -> list[WrittenComponent]:
    name = model.component
    model_recipes: dict[str, Path] = {}
    written = []
    for builds in model.versions:
        version = f"{builds.number}.0.0"
        files = artifacts_dir(stage, name, version)
        onnx = builds.onnx_platforms
        also = f" (its ONNX package for {', '.join(onnx)})" if onnx else ""
        log(f"{name} {version}: signing the packages of {builds.model_dir.name} for "
            f"{', '.join(model.platforms)}{also}")
        packages = {path: build_package(builds.model_dir, path, signer=signer, out_dir=files,
                                        version=builds.number)
                    for path, _ in builds.builds}
        onnx_package = build_onnx_package(builds.model_dir, signer=signer, out_dir=files,
                                          version=builds.number) if onnx else None
        if (builds.model_dir / TESTSET).is_file():
            shutil.copyfile(builds.model_dir / TESTSET, files / TESTSET)
        recipe = model_recipe(model_data, model, builds, version, packages, files, options,
                              onnx_package=onnx_package)
        model_recipes[version] = write_recipe(stage, name, version, recipe,
                                              template=MODEL_TEMPLATE)
    written.append(_finish(options, stage, name, options.recipes / MODEL_TEMPLATE, model_data,
                           model_recipes, model))

    files = artifacts_dir(stage, AGENT_COMPONENT, "pending")
    wheel = _wheel(options, files, log)
    agent_version = wheel_version(wheel)
    files = files.rename(files.parent / agent_version)
    shutil.copyfile(options.recipes / INSTALL_SCRIPT, files / INSTALL_SCRIPT)
    recipe = agent_recipe(agent_data, model, agent_version, files, options, signer)
    agent_path = write_recipe(stage, AGENT_COMPONENT, agent_version, recipe,
                              template=f"{AGENT_COMPONENT}.yaml")
    written.insert(0, _finish(options, stage, AGENT_COMPONENT,
                              options.recipes / f"{AGENT_COMPONENT}.yaml", agent_data,
                              {agent_version: agent_path}, model))

    checks: dict[str, Any] = {"require_digests": True, "forbid_yaml_aliases": True,
                              "allow_file_uris": options.uri_base == FILE_URIS,
                              "platforms": tuple(("linux", p) for p in model.platforms)}
    for version, path in model_recipes.items():
        check_recipe_file(path, artifacts_dir=path.parents[1] / "artifacts" / name / version,
                          **checks)
    for model_path in model_recipes.values():  # the dependency admits every model version
        model_recipe_read = Recipe.parse(load_recipe_data(model_path), source=str(model_path))
        check_recipe_file(agent_path, dependencies={name: model_recipe_read},
                          artifacts_dir=files, **checks)
    return written


def _finish(options: ComponentOptions, stage: Path, name: str, template_path: Path,
            template: dict[str, Any], recipes: dict[str, Path],
            model: ModelBuilds) -> WrittenComponent:
    model_component = model.component
    # The template as GDK's project recipe, naming this build's model component.
    project_recipe = template_path.read_text().replace(MODEL_SLOT, model_component)
    write_project(stage / name, name=name, project_recipe=project_recipe,
                  recipes=recipes, author=template.get("ComponentPublisher", "edge-inference"),
                  command=options.command or ("edge-agent", "package", "component"),
                  bucket=options.bucket, region=options.region)
    files = stage / name / "greengrass-build" / "artifacts" / name
    return WrittenComponent(
        name=name, folder=options.out / name, versions=tuple(sorted(recipes, key=version_key)),
        recipes=tuple(options.out / recipes[v].relative_to(stage)
                      for v in sorted(recipes, key=version_key)),
        artifacts=tuple(options.out / p.relative_to(stage)
                        for p in sorted(files.rglob("*")) if p.is_file()),
        platforms=model.platforms)


def _wheel(options: ComponentOptions, files: Path, log: Callable[[str], None]) -> Path:
    if options.wheel is not None:
        return Path(shutil.copy2(options.wheel, files / options.wheel.name))
    log(f"{AGENT_COMPONENT}: building the agent wheel")
    return build_wheel(files)
