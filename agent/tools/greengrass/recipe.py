"""Greengrass component recipes (format ``2020-01-25``), YAML or JSON.

The typed model follows the recipe reference: component metadata, ``ComponentDependencies``
(``VersionRequirement``, ``DependencyType``), the ``DefaultConfiguration`` (with its
``accessControl``), and each manifest's platform, lifecycle and ``Artifacts`` (``URI``,
``Digest``, ``Algorithm``, ``Unarchive``, ``Permission``). Keys are matched in any case, as
the nucleus and the GDK CLI read them (``Run`` and ``run`` are the same step); anything
the reference does not define is refused, naming the key (a :class:`RecipeError`).

Recipe variables (``{artifacts:path}``, ``{Dep:configuration:/port}``...) are read by
:mod:`agent.tools.greengrass.interpolation`; ``accessControl`` is read by
:mod:`agent.tools.greengrass.access_policy`. The emulated nucleus loads components with this
model.
"""

from __future__ import annotations

import copy
import json
import platform as host
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.core.errors import AgentError

_STRICT = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RecipeError(AgentError):
    """A component recipe (or its ``accessControl``) that cannot be loaded."""


class _RecipeModel(BaseModel):
    """Accepts each key in any case (``script``, ``Script``, ``SCRIPT``), and the values of
    the keys in ``_any_case_values`` too (``ZIP``, ``zip``)."""

    model_config = _STRICT
    _any_case_values: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _keys_in_any_case(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        canonical: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            canonical[name.lower()] = canonical[key.lower()] = key
        keyed: dict[Any, Any] = {}
        for key, value in data.items():
            name = canonical.get(key.lower(), key) if isinstance(key, str) else key
            if name in keyed:
                raise ValueError(f"{key!r} repeats {name!r}: recipe keys ignore case")
            keyed[name] = value.upper() if name in cls._any_case_values and isinstance(
                value, str) else value
        return keyed


class LifecycleStep(_RecipeModel):
    script: str = Field(alias="Script")
    requires_privilege: bool | str = Field(default=False, alias="RequiresPrivilege")
    setenv: dict[str, str] = Field(default_factory=dict, alias="Setenv")
    timeout: int | None = Field(default=None, alias="Timeout")
    skipif: str | None = Field(default=None, alias="Skipif")


Step = str | LifecycleStep
STEP_NAMES = ("bootstrap", "install", "startup", "run", "shutdown", "recover")


class Lifecycle(_RecipeModel):
    setenv: dict[str, str] = Field(default_factory=dict, alias="Setenv")
    bootstrap: Step | None = None
    install: Step | None = None
    startup: Step | None = None
    run: Step | None = None
    shutdown: Step | None = None
    recover: Step | None = None

    def steps(self) -> dict[str, LifecycleStep]:
        """Each step that is set, as a LifecycleStep (a plain string is its Script)."""
        found: dict[str, LifecycleStep] = {}
        for name in STEP_NAMES:
            step = getattr(self, name)
            if isinstance(step, str):
                step = LifecycleStep.model_validate({"Script": step})
            if step is not None:
                found[name] = step
        return found


class Platform(BaseModel):
    # The recipe reference lets a platform name custom attributes, so unknown keys are kept.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    os: str | None = None
    architecture: str | None = None
    architecture_detail: str | None = Field(default=None, alias="architecture.detail")

    def matches(self, *, os: str, architecture: str) -> bool:
        """Whether a device with this os and architecture meets the platform: a value is
        exact, ``*`` (anything) or a ``/regular expression/``."""
        return _platform_value(self.os, os) and _platform_value(self.architecture, architecture)


def _platform_value(wanted: str | None, actual: str) -> bool:
    if wanted is None or wanted == "*":
        return True
    if len(wanted) > 1 and wanted.startswith("/") and wanted.endswith("/"):
        return re.fullmatch(wanted[1:-1], actual) is not None
    return wanted == actual


Access = Literal["NONE", "OWNER", "ALL"]


class Permission(_RecipeModel):
    _any_case_values = ("Read", "Execute")
    read: Access = Field(default="OWNER", alias="Read")
    execute: Access = Field(default="NONE", alias="Execute")


class Artifact(_RecipeModel):
    _any_case_values = ("Unarchive",)
    uri: str = Field(alias="URI", min_length=1)
    digest: str | None = Field(default=None, alias="Digest")
    algorithm: str | None = Field(default=None, alias="Algorithm")
    unarchive: Literal["NONE", "ZIP"] = Field(default="NONE", alias="Unarchive")
    permission: Permission = Field(default_factory=Permission, alias="Permission")

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme.lower()

    @property
    def file_name(self) -> str:
        """The name the nucleus stores the artifact under: the URI's last path segment."""
        parts = urlsplit(self.uri)
        return posixpath.basename(parts.path or parts.netloc) or parts.netloc


class Dependency(_RecipeModel):
    _any_case_values = ("DependencyType",)
    version_requirement: str = Field(alias="VersionRequirement", min_length=1)
    dependency_type: Literal["HARD", "SOFT"] = Field(default="HARD", alias="DependencyType")


class Manifest(_RecipeModel):
    name: str | None = Field(default=None, alias="Name")
    platform: Platform = Field(default_factory=lambda: Platform.model_validate({}),
                               alias="Platform")
    lifecycle: Lifecycle | None = Field(default=None, alias="Lifecycle")
    selections: list[str] = Field(default_factory=list, alias="Selections")
    artifacts: list[Artifact] = Field(default_factory=list, alias="Artifacts")


class ComponentConfiguration(_RecipeModel):
    default_configuration: dict[str, Any] = Field(default_factory=dict,
                                                  alias="DefaultConfiguration")


class Recipe(_RecipeModel):
    recipe_format_version: Literal["2020-01-25"] = Field(alias="RecipeFormatVersion")
    component_name: str = Field(alias="ComponentName", min_length=1)
    component_version: str = Field(default="0.0.0", alias="ComponentVersion")
    component_type: str | None = Field(default=None, alias="ComponentType")
    component_description: str | None = Field(default=None, alias="ComponentDescription")
    component_publisher: str | None = Field(default=None, alias="ComponentPublisher")
    component_source: str | None = Field(default=None, alias="ComponentSource")
    component_configuration: ComponentConfiguration = Field(
        default_factory=ComponentConfiguration, alias="ComponentConfiguration")
    component_dependencies: dict[str, Dependency] = Field(
        default_factory=dict, alias="ComponentDependencies")
    manifests: list[Manifest] = Field(default_factory=list, alias="Manifests")
    lifecycle: dict[str, Any] = Field(default_factory=dict, alias="Lifecycle")

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        return cls.parse(load_recipe_data(path), source=str(path))

    @classmethod
    def parse(cls, data: object, *, source: str = "recipe") -> Recipe:
        if not isinstance(data, Mapping):
            raise RecipeError(f"{source}: a recipe is a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise RecipeError(f"{source}: {err}") from err

    def default_configuration(self) -> dict[str, Any]:
        return copy.deepcopy(self.component_configuration.default_configuration)

    def manifest_for(self, *, os: str, architecture: str) -> Manifest:
        """The first manifest whose platform this device meets, as a real nucleus picks."""
        for manifest in self.manifests:
            if manifest.platform.matches(os=os, architecture=architecture):
                return manifest
        raise RecipeError(f"{self.component_name}: no manifest for {os}/{architecture}")

    def run_step(self, *, os: str, architecture: str) -> LifecycleStep | None:
        lifecycle = self.manifest_for(os=os, architecture=architecture).lifecycle
        if lifecycle is None or lifecycle.run is None:
            return None
        if isinstance(lifecycle.run, str):
            return LifecycleStep.model_validate({"Script": lifecycle.run,
                                                 "Setenv": dict(lifecycle.setenv)})
        return lifecycle.run.model_copy(update={"setenv": {**lifecycle.setenv,
                                                           **lifecycle.run.setenv}})


def load_recipe_data(path: str | Path) -> Any:
    """The parsed YAML or JSON of a recipe file (JSON when its suffix is ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err}") from err
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise RecipeError(f"recipe {path} is not valid YAML/JSON: {err}") from err


def host_platform() -> tuple[str, str]:
    """This machine as a Greengrass platform: (os, architecture)."""
    machine = host.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64",
            "i686": "x86", "i386": "x86"}.get(machine, "arm" if machine.startswith("arm")
                                               else machine)
    return host.system().lower(), arch
