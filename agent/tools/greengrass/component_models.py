"""Which model ``edge-agent package component`` packages, and for which platforms.

``--models`` is a folder of model directories (or one model directory). The model is the
one name found there, or the one ``--model`` picks; its component is
``com.edgeinference.Model.<name>`` (:func:`component_name`), so the name must be one a
Greengrass component can carry. Each version is one component version.

A component is built for exactly the platforms the model has builds for: each real DLR
build's architecture is a Greengrass platform (:data:`PLATFORM_OF_ARCH`: x86_64 -> amd64,
aarch64 -> aarch64, armv7l -> arm). A Raspberry Pi 4 and a Jetson are both aarch64: their
builds share the aarch64 manifest and each device stages the package of its own Neo target.
Decisions on what counts:

* an emulated build (``emulated: true``: x86_64 code built on behalf of an emulated board)
  is no build for that board's platform and makes no platform of its own; it rides in the
  manifest of its architecture when a real build makes that platform (a laptop emulating
  the board then finds its package) and is left out otherwise;
* with several versions, the components cover the platforms every version has real
  builds for: one agent recipe admits every version, and its manifests and each model
  recipe's are the same;
* the ONNX export (``onnx/model.onnx``) is no DLR build: a model with real DLR builds
  is built for their platforms and its agent runs the DLR backend, and each version's
  ONNX package rides in the manifests of those platforms where ONNX Runtime runs
  (:data:`ONNX_PLATFORMS`), for devices configured with the onnx backend;
* a model with no real DLR build for a platform every version shares, but an ONNX export
  in every version, is built for :data:`ONNX_PLATFORMS` (amd64 and aarch64: pyproject's
  ``onnxruntime`` marker leaves out armv7l, which has no wheel) and its agent defaults to
  the onnx backend (:attr:`ModelBuilds.backend`); its DLR builds for those platforms ride
  along, and the others are left out.

Every build left out, and every platform no device of which can install the components,
is said in :attr:`ModelBuilds.left_out`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.core.errors import ConfigError
from agent.core.model_layout import (
    MODEL_INFO,
    ONNX_FILE,
    ArtifactInfo,
    ModelInfo,
    list_artifacts,
    read_model_info,
)
from agent.tools.greengrass.component_options import MODEL_PREFIX
from agent.tools.greengrass.recipe_check import AGENT_COMPONENT

PLATFORMS = ("amd64", "aarch64", "arm")  # Greengrass's architecture names, in recipe order
PLATFORM_OF_ARCH = {"x86_64": "amd64", "aarch64": "aarch64", "armv7l": "arm"}
# Where ONNX Runtime runs: pyproject's onnxruntime dependency has no armv7l wheel.
ONNX_PLATFORMS = ("amd64", "aarch64")
_COMPONENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # the recipe reference's rule

Build = tuple[Path, ArtifactInfo]


@dataclass(frozen=True)
class VersionBuilds:
    """One model version: its directory and the builds its component version carries."""

    number: int
    model_dir: Path
    info: ModelInfo
    by_platform: dict[str, tuple[Build, ...]]  # real builds first, then emulated ones
    onnx: bool = False  # the directory has onnx/model.onnx: the version has an ONNX package

    @property
    def builds(self) -> tuple[Build, ...]:
        return tuple(b for platform in self.by_platform.values() for b in platform)

    @property
    def onnx_platforms(self) -> tuple[str, ...]:
        """The platforms of this version whose manifests carry its ONNX package."""
        return tuple(p for p in self.by_platform if p in ONNX_PLATFORMS) if self.onnx else ()


@dataclass(frozen=True)
class ModelBuilds:
    """The model the components are built for."""

    name: str
    component: str  # com.edgeinference.Model.<name>
    platforms: tuple[str, ...]  # Greengrass architectures, in :data:`PLATFORMS` order
    versions: tuple[VersionBuilds, ...]  # oldest first
    left_out: tuple[str, ...]  # what is not in the components, and why
    # The agent's default backend: onnx for a model that only ONNX Runtime can run on
    # the components' platforms.
    backend: Literal["dlr", "onnx"] = "dlr"


def component_name(name: str, source: Path) -> str:
    """``com.edgeinference.Model.<name>``, or ConfigError naming ``source``'s field."""
    component = MODEL_PREFIX + name
    if not _COMPONENT_NAME.fullmatch(component):
        raise ConfigError(
            f"{source}: name {name!r} cannot name a Greengrass component "
            f"({MODEL_PREFIX}<name> is 1-128 of A-Z a-z 0-9 _ . -, so the name takes at most "
            f"{128 - len(MODEL_PREFIX)} of them)")
    return component


def model_dirs(models: Path) -> dict[str, dict[int, Path]]:
    """Each model name under ``models`` (or ``models`` itself, a model directory), with
    the directory of each of its versions (not its deliberately bad builds)."""
    if not models.is_dir():
        raise ConfigError(f"--models {models}: no such folder (build the models with "
                          "`edge-agent models build`, or import yours with `edge-agent "
                          "models import`)")
    candidates = [models] if (models / MODEL_INFO).is_file() else sorted(
        p for p in models.iterdir() if (p / MODEL_INFO).is_file())
    found: dict[str, dict[int, Path]] = {}
    for path in candidates:
        info = read_model_info(path)
        if info.variant is not None or not info.version.isdigit():
            continue
        versions = found.setdefault(info.name, {})
        number = int(info.version)
        if number in versions:
            raise ConfigError(f"{versions[number]} and {path} are both {info.name} "
                              f"v{number} (their {MODEL_INFO})")
        versions[number] = path
    return found


def find_model(models: Path, name: str | None, versions: tuple[int, ...]) -> ModelBuilds:
    """The model ``name`` (default: the only one) of ``models``, at ``versions`` (default:
    all), with the platforms its components are built for."""
    found = model_dirs(models)
    if name is None:
        if len(found) > 1:
            raise ConfigError(f"{models} holds the models {', '.join(sorted(found))}: pick "
                              "one with --model NAME")
        name = next(iter(found), None)
    if name is None or name not in found:
        raise ConfigError(f"{models}: no model{f' named {name}' if name else ''} (has: "
                          f"{', '.join(sorted(found)) or 'none'})")
    dirs = found[name]
    wanted = versions or tuple(sorted(dirs))
    missing = [v for v in wanted if v not in dirs]
    if missing:
        raise ConfigError(f"{models}: no {name} model for version(s) "
                          f"{', '.join(map(str, missing))} (has: "
                          f"{', '.join(map(str, sorted(dirs)))})")
    component = component_name(name, dirs[wanted[0]] / MODEL_INFO)
    chosen = sorted(set(wanted))
    real = {v: _real_platforms(dirs[v]) for v in chosen}
    platforms = tuple(p for p in PLATFORMS if all(p in real[v] for v in chosen))
    lacks = ("have no real build for a platform every version shares" if len(chosen) > 1
             else "has no real build for any platform")
    no_onnx = [v for v in chosen if not (dirs[v] / ONNX_FILE).is_file()]
    onnx = not platforms and not no_onnx
    if onnx:
        platforms = ONNX_PLATFORMS
    left_out: list[str] = []
    builds = tuple(_version(v, dirs[v], platforms, real, left_out, onnx=onnx) for v in chosen)
    if not platforms:
        raise ConfigError(f"{models}: {name} v{', v'.join(map(str, chosen))} {lacks} "
                          "(dlr/<target>-<arch>/ with emulated false), so no device could "
                          f"install {component} (nor run it on the ONNX backend: "
                          f"{', '.join(str(dirs[v] / ONNX_FILE) for v in no_onnx)} "
                          f"{'is' if len(no_onnx) == 1 else 'are'} missing)")
    missing_platforms = [p for p in PLATFORMS if p not in platforms]
    if onnx:
        shared = "a platform every version shares" if len(chosen) > 1 else "any platform"
        left_out.append(
            f"{component} runs on the ONNX backend ({AGENT_COMPONENT}'s default backend is "
            f"onnx; {name} has no real DLR build for {shared}): built for "
            f"{', '.join(f'linux/{p}' for p in platforms)}; "
            f"{', '.join(f'linux/{p}' for p in missing_platforms)} is left out (ONNX Runtime "
            f"has no armv7l build), so devices of that platform cannot install it or "
            f"{AGENT_COMPONENT}")
    elif missing_platforms:
        where = ", ".join(f"linux/{p}" for p in missing_platforms)
        left_out.append(f"{component} has no build for {where}: devices of "
                        f"{'that platform' if len(missing_platforms) == 1 else 'those platforms'}"
                        f" cannot install it or {AGENT_COMPONENT}")
    return ModelBuilds(name=name, component=component, platforms=platforms, versions=builds,
                       left_out=tuple(left_out), backend="onnx" if onnx else "dlr")


def _platform(path: Path, info: ArtifactInfo) -> str:
    platform = PLATFORM_OF_ARCH.get(info.arch)
    if platform is None:
        raise ConfigError(f"{path / 'artifact.info'}: arch {info.arch!r} has no Greengrass "
                          f"platform (known: {', '.join(sorted(PLATFORM_OF_ARCH))})")
    return platform


def _real_platforms(model_dir: Path) -> set[str]:
    return {_platform(path, info) for path, info in list_artifacts(model_dir)
            if not info.emulated}


def _version(number: int, model_dir: Path, platforms: tuple[str, ...],
             real: dict[int, set[str]], left_out: list[str], *, onnx: bool) -> VersionBuilds:
    info = read_model_info(model_dir)
    kept: dict[str, list[Build]] = {p: [] for p in platforms}
    for path, artifact in list_artifacts(model_dir):
        platform = _platform(path, artifact)
        if platform in kept:
            kept[platform].append((path, artifact))
        elif artifact.emulated:
            left_out.append(
                f"{path}: an emulated build ({artifact.arch} code on behalf of "
                f"{artifact.target}) makes no platform, and there is no real {platform} "
                "build for it to ride with: left out")
        elif onnx:
            left_out.append(
                f"{path}: left out: the components run {info.name} on the ONNX backend, "
                f"which has no {platform} manifest (ONNX Runtime has no {artifact.arch} "
                "build)")
        else:
            others = [f"v{v}" for v, found in sorted(real.items()) if platform not in found]
            left_out.append(
                f"{path}: left out: {' and '.join(others)} of {info.name} "
                f"{'has' if len(others) == 1 else 'have'} no {platform} build, and one "
                f"agent recipe admits every version (build v{number} alone with "
                f"--model-version {number})")
    by_platform = {p: tuple(sorted(found, key=lambda b: (b[1].emulated, b[0].name)))
                   for p, found in kept.items()}
    return VersionBuilds(number=number, model_dir=model_dir, info=info,
                         by_platform=by_platform, onnx=(model_dir / ONNX_FILE).is_file())
