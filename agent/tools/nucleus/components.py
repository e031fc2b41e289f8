"""A local component store and the deployments resolved from it.

The store is the layout the Greengrass Development Kit builds and
``greengrass-cli deployment create --recipeDir R --artifactDir A`` takes::

    STORE/recipes/<any name>.yaml|.yml|.json        every file is a recipe
    STORE/artifacts/<ComponentName>/<ComponentVersion>/<file>

Resolving a deployment (root components, each at a version or the newest) gives the
dependency closure through ``ComponentDependencies``, ordered dependencies first, each
component at the newest version its ``VersionRequirement``\\ s allow. Errors::

    NucleusError
    └── DeploymentError             .component names the component at fault
        ├── DependencyError         unknown dependency, requirement not met, cycle
        ├── PlatformError           no manifest for this device's platform
        ├── ComponentArtifactError  missing artifact, digest mismatch, unsafe archive
        └── LifecycleError          a lifecycle step failed or timed out (.log_path)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.core.errors import ConfigError
from agent.tools.greengrass.recipe import Manifest, Recipe, RecipeError, host_platform
from agent.tools.greengrass.versions import Version, satisfies
from agent.tools.nucleus.errors import NucleusError
from agent.tools.nucleus.token_exchange import TOKEN_EXCHANGE_SERVICE

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
# Dependencies a device may get from elsewhere than the store (the nucleus itself, its
# plugins, or - for variant.DLR - the dlr wheel the emulated device installs).
PROVIDABLE_PREFIX = "aws.greengrass."
PROVIDABLE_NAMES = frozenset({"variant.DLR"})
# What the nucleus itself provides, as a real nucleus's built-in components: always provided.
BUILT_IN = frozenset({TOKEN_EXCHANGE_SERVICE})


class DeploymentError(NucleusError):
    """A deployment that cannot go on; ``component`` names the component at fault."""

    def __init__(self, message: str, *, component: str | None = None) -> None:
        super().__init__(message)
        self.component = component


class DependencyError(DeploymentError):
    """An unknown or unavailable dependency, an unmet version requirement, a cycle."""


class PlatformError(DeploymentError):
    """No manifest of a component's recipe fits this device's platform."""


class ComponentArtifactError(DeploymentError):
    """A component's artifact that is missing, does not match its digest, or cannot be unpacked."""


class LifecycleError(DeploymentError):
    """A lifecycle step failed (non-zero exit) or timed out; its output is in ``log_path``."""

    def __init__(self, message: str, *, component: str, log_path: Path | None = None,
                 timed_out: bool = False) -> None:
        super().__init__(message, component=component)
        self.log_path = log_path
        self.timed_out = timed_out


def _meets(version: Version | str, requirement: str) -> bool:
    """:func:`satisfies`, a malformed requirement being a RecipeError."""
    try:
        return satisfies(version, requirement)
    except ConfigError as err:
        raise RecipeError(str(err)) from err


def providable(name: str) -> bool:
    """Whether a dependency may be declared provided by the platform."""
    return name.startswith(PROVIDABLE_PREFIX) or name in PROVIDABLE_NAMES


@dataclass(frozen=True)
class DeploymentPlan:
    """What a deployment installs: ``components`` dependencies first, the requested
    ``roots``, and the dependencies ``provided`` by the platform (name -> requirement)
    that are not deployed."""

    components: tuple[Recipe, ...]
    roots: tuple[str, ...]
    provided: Mapping[str, str] = field(default_factory=dict)
    store: ComponentStore | None = None

    @property
    def names(self) -> list[str]:
        return [r.component_name for r in self.components]

    def recipe(self, name: str) -> Recipe:
        for recipe in self.components:
            if recipe.component_name == name:
                return recipe
        raise NucleusError(f"{name} is not part of this deployment")

    def manifest(self, name: str) -> Manifest:
        """The manifest of ``name`` for this machine's platform."""
        os_name, arch = host_platform()
        try:
            return self.recipe(name).manifest_for(os=os_name, architecture=arch)
        except RecipeError as err:
            raise PlatformError(f"{name}: no manifest for {os_name}/{arch}",
                                component=name) from err

    def dependencies(self, name: str) -> list[str]:
        """The direct dependencies of ``name`` that this deployment installs."""
        deployed = set(self.names)
        return [d for d in self.recipe(name).component_dependencies if d in deployed]


class ComponentStore:
    """The recipes and artifacts of a local component store (see the module doc)."""

    def __init__(self, root: str | Path | None, recipes: Iterable[Recipe]) -> None:
        self.root = Path(root) if root is not None else None
        self._recipes: dict[str, dict[Version, Recipe]] = {}
        for recipe in recipes:
            name = recipe.component_name
            try:
                version = Version.parse(recipe.component_version)
            except ConfigError as err:
                raise RecipeError(f"{name}: {err}") from err
            if version in self._recipes.get(name, {}):
                raise RecipeError(f"{name} {version} is in the store twice")
            self._recipes.setdefault(name, {})[version] = recipe

    @classmethod
    def load(cls, root: str | Path) -> ComponentStore:
        """Read every recipe under ``root/recipes``."""
        root = Path(root)
        folder = root / "recipes"
        if not folder.is_dir():
            raise NucleusError(f"no component store at {root}: {folder} is not a folder")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES)
        return cls(root, [Recipe.load(p) for p in paths])

    def artifact_dir(self, name: str, version: str) -> Path | None:
        return None if self.root is None else self.root / "artifacts" / name / version

    def versions(self, name: str) -> list[Version]:
        """The versions of ``name`` in the store, newest first."""
        return sorted(self._recipes.get(name, {}), reverse=True)

    def resolve(self, components: Mapping[str, str | None], *,
                provided: Iterable[str] = ()) -> DeploymentPlan:
        """The deployment of ``components`` ({name: version, or None for the newest}).

        A dependency absent from the store is an error unless ``provided`` names it and
        it is an ``aws.greengrass.*`` component or ``variant.DLR``: then the platform is
        taken to provide it and it is listed in ``DeploymentPlan.provided``; so is a
        component the emulated nucleus has built in (:data:`BUILT_IN`: the token exchange
        service), without being named in ``provided``. Versions are
        chosen depth-first, dependencies first; a later requirement that the version
        already chosen does not meet is a DependencyError (no backtracking).
        """
        provided = set(provided)
        refused = sorted(n for n in provided if not providable(n))
        if refused:
            raise DependencyError(f"only aws.greengrass.* components and variant.DLR can be "
                                  f"provided by the platform, not {refused}",
                                  component=refused[0])
        provided |= BUILT_IN
        if not components:
            raise DependencyError("a deployment needs at least one component")
        chosen: dict[str, Recipe] = {}
        order: list[Recipe] = []
        skipped: dict[str, str] = {}
        visiting: list[str] = []

        def visit(name: str, requirement: str, wanted_by: str) -> None:
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name):], name])
                raise DependencyError(f"dependency cycle: {cycle}", component=name)
            if name in chosen:
                have = chosen[name].component_version
                if not _meets(have, requirement):
                    raise DependencyError(
                        f"{wanted_by} requires {name} {requirement}, but {name} {have} was "
                        "chosen for another component", component=name)
                return
            if name not in self._recipes:
                if name in provided:
                    skipped[name] = requirement
                    return
                raise DependencyError(f"{wanted_by} depends on {name}, which is not in the "
                                      "component store", component=name)
            fits = [v for v in self.versions(name) if _meets(v, requirement)]
            if not fits:
                raise DependencyError(
                    f"{wanted_by} requires {name} {requirement!r}; the component store has "
                    f"{self._listed(name)}", component=name)
            recipe = chosen[name] = self._recipes[name][fits[0]]
            visiting.append(name)
            for dependency, properties in recipe.component_dependencies.items():
                visit(dependency, properties.version_requirement,
                      f"{name} {recipe.component_version}")
            visiting.pop()
            order.append(recipe)

        for name, version in components.items():
            visit(name, f"={version}" if version else "*", "the deployment")
        return DeploymentPlan(components=tuple(order), roots=tuple(components),
                              provided=skipped, store=self)

    def _listed(self, name: str) -> str:
        return ", ".join(str(v) for v in self.versions(name)) or "none"
