"""The build folders of the Greengrass Development Kit (GDK), and the agent's wheel.

A GDK component folder holds ``gdk-config.json``, the project recipe (``recipe.yaml``) and
``greengrass-build/``: ``recipes/`` and ``artifacts/<Component>/<version>/``. ``gdk
component publish`` uploads that version's artifacts, fills in the artifact URIs of
``greengrass-build/recipes/recipe.yaml`` and creates the component version.

:func:`build_wheel` builds the agent's wheel (the Python package the agent component
installs on a device) from this source tree with ``pip wheel``, in a copy of the sources
so the tree gets no ``build/`` folder.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agent.core.errors import ConfigError

GDK_VERSION = "1.0.0"  # the oldest GDK CLI with the custom build system
LOCAL_DEPLOYMENT = "greengrass-local"  # every recipe and artifact, for greengrass-cli
BUILD = "greengrass-build"
WHEEL_PREFIX = "edge_inference_agent-"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
_WHEEL = re.compile(r"edge_inference_agent-(\d+\.\d+\.\d+)-py3-none-any\.whl")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


class _NoAliases(yaml.SafeDumper):
    """Writes shared values out in full: the nucleus's YAML parser does not resolve aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))


def artifacts_dir(root: Path, name: str, version: str) -> Path:
    """A new ``<root>/<name>/greengrass-build/artifacts/<name>/<version>/``."""
    path = root / name / BUILD / "artifacts" / name / version
    path.mkdir(parents=True)
    return path


def write_recipe(root: Path, name: str, version: str, recipe: Mapping[str, Any], *,
                 template: str | None = None) -> Path:
    """``greengrass-build/recipes/<name>-<version>.yaml``, every value written out; its
    header names the ``template`` in recipes/ it came from (default ``<name>.yaml``)."""
    path = root / name / BUILD / "recipes" / f"{name}-{version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {name} {version}, written by `edge-agent package component` from "
              f"recipes/{template or f'{name}.yaml'}.\n---\n")
    path.write_text(header + yaml.dump(dict(recipe), Dumper=_NoAliases, sort_keys=False,
                                       width=100))
    return path


def write_project(folder: Path, *, name: str, project_recipe: str,
                  recipes: Mapping[str, Path], author: str, command: Sequence[str],
                  bucket: str, region: str) -> str:
    """``gdk-config.json`` and the recipes GDK reads (``project_recipe`` is the text of
    the project's ``recipe.yaml``); the version it publishes (the newest of ``recipes``)."""
    latest = max(recipes, key=version_key)
    (folder / "recipe.yaml").write_text(project_recipe)
    shutil.copyfile(recipes[latest], folder / BUILD / "recipes" / "recipe.yaml")
    config = {"component": {name: {
        "author": author, "version": latest,
        "build": {"build_system": "custom", "custom_build_command": list(command)},
        "publish": {"bucket": bucket, "region": region}}}, "gdk_version": GDK_VERSION}
    (folder / "gdk-config.json").write_text(json.dumps(config, indent=2) + "\n")
    return latest


def local_deployment(root: Path, names: Sequence[str]) -> Path:
    """One recipe folder and one artifact folder for ``greengrass-cli deployment create
    --recipeDir --artifactDir``: hard links to the components' files."""
    local = root / LOCAL_DEPLOYMENT
    for name in names:
        build = root / name / BUILD
        for source in sorted(p for p in build.rglob("*") if p.is_file()):
            relative = source.relative_to(build)
            if relative.parts[0] == "recipes" and source.name == "recipe.yaml":
                continue  # GDK's copy of one of the versioned recipes
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.hardlink_to(source)
            except OSError:
                shutil.copy2(source, target)
    return local


def wheel_version(path: Path) -> str:
    """The agent version of a wheel file, from its name; ConfigError if it is none."""
    match = _WHEEL.fullmatch(path.name)
    if match is None or not path.is_file():
        raise ConfigError(f"{path}: not an agent wheel (edge_inference_agent-X.Y.Z-py3-none-any"
                          ".whl)")
    return match.group(1)


def build_wheel(dest: Path, *, root: Path = PROJECT_ROOT, timeout_s: float = 600) -> Path:
    """Build the agent's wheel into ``dest``; its path."""
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"{root}: no pyproject.toml to build the agent wheel from (an "
                          "installed agent has no sources: pass --wheel FILE)")
    with tempfile.TemporaryDirectory(prefix="agent-wheel-") as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            if (root / name).is_file():
                shutil.copyfile(root / name, source / name)
        for package in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
            if package.name != "tests":
                shutil.copytree(package, source / package.name, ignore=_SKIP)
        out = Path(tmp) / "out"
        # Offline when this environment can build wheels itself (the dev extra brings
        # `wheel`); otherwise pip fetches the build backend into an isolated environment.
        no_isolation = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *no_isolation,
                 "-w", str(out), str(source)],
                capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ConfigError(f"building the agent wheel failed: {err}") from err
        wheels = sorted(out.glob(f"{WHEEL_PREFIX}*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise ConfigError("building the agent wheel failed (pip wheel):\n"
                              + (result.stderr or result.stdout)[-2000:])
        dest.mkdir(parents=True, exist_ok=True)
        built = Path(shutil.copy2(wheels[0], dest / wheels[0].name))
    wheel_version(built)
    return built
