"""Greengrass component recipes (format ``2020-01-25``), YAML or JSON.

Only what the emulated nucleus acts on is interpreted: the component name, the
``DefaultConfiguration`` (with its ``accessControl``), and each manifest's platform and
lifecycle. Fields the recipe reference defines but the nucleus does not use here
(artifacts, dependencies, publisher...) are accepted and kept as given.
"""

from __future__ import annotations

import copy
import json
import platform as host
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.emulation.nucleus.errors import RecipeError

_STRICT = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
_VARIABLE = re.compile(r"\{(iot:thingName|work:path|artifacts:path|artifacts:decompressedPath"
                       r"|kernel:rootPath|configuration:[^}]*)\}")


class LifecycleStep(BaseModel):
    model_config = _STRICT
    script: str = Field(alias="Script")
    requires_privilege: bool | str = Field(default=False, alias="RequiresPrivilege")
    setenv: dict[str, str] = Field(default_factory=dict, alias="Setenv")
    timeout: int | None = Field(default=None, alias="Timeout")
    skipif: str | None = Field(default=None, alias="Skipif")


Step = str | LifecycleStep


class Lifecycle(BaseModel):
    model_config = _STRICT
    setenv: dict[str, str] = Field(default_factory=dict, alias="Setenv")
    bootstrap: Step | None = None
    install: Step | None = None
    startup: Step | None = None
    run: Step | None = None
    shutdown: Step | None = None
    recover: Step | None = None


class Platform(BaseModel):
    # The recipe reference lets a platform name custom attributes, so unknown keys are kept.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    os: str | None = None
    architecture: str | None = None
    architecture_detail: str | None = Field(default=None, alias="architecture.detail")

    def matches(self, *, os: str, architecture: str) -> bool:
        return self.os in (None, "*", os) and self.architecture in (None, "*", architecture)


class Manifest(BaseModel):
    model_config = _STRICT
    name: str | None = Field(default=None, alias="Name")
    platform: Platform = Field(default_factory=lambda: Platform.model_validate({}),
                               alias="Platform")
    lifecycle: Lifecycle | None = Field(default=None, alias="Lifecycle")
    selections: list[str] = Field(default_factory=list, alias="Selections")
    artifacts: list[dict[str, Any]] = Field(default_factory=list, alias="Artifacts")


class ComponentConfiguration(BaseModel):
    model_config = _STRICT
    default_configuration: dict[str, Any] = Field(default_factory=dict,
                                                  alias="DefaultConfiguration")


class Recipe(BaseModel):
    model_config = _STRICT
    recipe_format_version: Literal["2020-01-25"] = Field(alias="RecipeFormatVersion")
    component_name: str = Field(alias="ComponentName", min_length=1)
    component_version: str = Field(default="0.0.0", alias="ComponentVersion")
    component_type: str | None = Field(default=None, alias="ComponentType")
    component_description: str | None = Field(default=None, alias="ComponentDescription")
    component_publisher: str | None = Field(default=None, alias="ComponentPublisher")
    component_source: str | None = Field(default=None, alias="ComponentSource")
    component_configuration: ComponentConfiguration = Field(
        default_factory=ComponentConfiguration, alias="ComponentConfiguration")
    component_dependencies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, alias="ComponentDependencies")
    manifests: list[Manifest] = Field(default_factory=list, alias="Manifests")
    lifecycle: dict[str, Any] = Field(default_factory=dict, alias="Lifecycle")

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise RecipeError(f"cannot read recipe {path}: {err}") from err
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise RecipeError(f"recipe {path} is not valid YAML/JSON: {err}") from err
        return cls.parse(data, source=str(path))

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


def host_platform() -> tuple[str, str]:
    """This machine as a Greengrass platform: (os, architecture)."""
    machine = host.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64",
            "i686": "x86", "i386": "x86"}.get(machine, "arm" if machine.startswith("arm")
                                               else machine)
    return host.system().lower(), arch


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Replace the recipe variables ``{iot:thingName}``, ``{work:path}``... that
    ``variables`` names; unknown ones stay as written, as a real nucleus leaves them."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def interpolate_tree(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, dict):
        return {k: interpolate_tree(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, variables) for v in value]
    return value
