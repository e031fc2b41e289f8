"""A deployment on the emulated nucleus: check everything, install artifacts, then run
the lifecycles, dependencies first.

Everything that can be checked before a process starts is checked first, for every
component: a manifest for this platform (PlatformError), every recipe variable of every
step (UnresolvedVariableError), the Skipif syntax, and then every artifact (ComponentArtifactError).
Only then do lifecycles run. When a lifecycle step fails the deployment stops there with
a LifecycleError; the components already started keep running (as a local deployment with
the DO_NOTHING failure policy) until the nucleus stops them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.tools.greengrass.recipe import Recipe, RecipeError
from agent.tools.nucleus.artifacts import artifacts_path, decompressed_path, install_artifacts
from agent.tools.nucleus.components import DeploymentPlan, LifecycleError
from agent.tools.nucleus.runner import ComponentRunner, Phase, Step, lifecycle_steps
from agent.tools.nucleus.strict_variables import (
    ComponentPaths,
    UnresolvedVariableError,
    VariableScope,
    resolve_variables,
)


def component_paths(root_dir: Path, recipe: Recipe) -> ComponentPaths:
    name, version = recipe.component_name, recipe.component_version
    return ComponentPaths(artifacts=artifacts_path(root_dir, name, version),
                          decompressed=decompressed_path(root_dir, name, version),
                          work=root_dir / "work" / name)


def variable_scope(recipe: Recipe, *, deployed: Mapping[str, Recipe], root_dir: Path,
                   thing_name: str, configuration: Callable[[str], Any]) -> VariableScope:
    """What ``recipe``'s variables see: itself and its direct dependencies in ``deployed``."""
    names = [recipe.component_name,
             *(d for d in recipe.component_dependencies if d in deployed)]
    return VariableScope(
        component=recipe.component_name, thing_name=thing_name, root_dir=root_dir,
        paths={n: component_paths(root_dir, deployed.get(n, recipe)) for n in names},
        configuration=configuration)


def _fill(text: str, *, scope: VariableScope) -> str:
    return resolve_variables(text, scope)


class Deployment:
    """Runs a DeploymentPlan's components on a nucleus (see the module doc)."""

    def __init__(self, plan: DeploymentPlan, *, root_dir: Path, thing_name: str,
                 configuration: Callable[[str], Any],
                 env_for: Callable[[str, Mapping[str, str]], dict[str, str]]) -> None:
        self.plan = plan
        self.root_dir = root_dir
        self.thing_name = thing_name
        self._configuration = configuration
        self.runner = ComponentRunner(root_dir=root_dir, env_for=env_for)

    def scope(self, name: str) -> VariableScope:
        deployed = {r.component_name: r for r in self.plan.components}
        return variable_scope(self.plan.recipe(name), deployed=deployed,
                              root_dir=self.root_dir, thing_name=self.thing_name,
                              configuration=self._configuration)

    def check(self) -> dict[str, dict[Phase, Step]]:
        """Every component's lifecycle steps, variables filled in; raises on the first
        component that has no manifest here or a step that cannot be resolved."""
        steps: dict[str, dict[Phase, Step]] = {}
        for name in self.plan.names:
            fill = functools.partial(_fill, scope=self.scope(name))
            try:
                steps[name] = lifecycle_steps(self.plan.manifest(name).lifecycle, fill)
            except UnresolvedVariableError:
                raise
            except RecipeError as err:
                raise RecipeError(f"{name}: {err}") from err
        return steps

    def deploy(self, *, timeout_s: float | None = None) -> None:
        """Check, install every artifact, then install and start every component."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        steps = self.check()
        for recipe in self.plan.components:
            install_artifacts(self.plan.store, name=recipe.component_name,
                              version=recipe.component_version,
                              artifacts=self.plan.manifest(recipe.component_name).artifacts,
                              root=self.root_dir)
        for name in self.plan.names:
            if deadline is not None and time.monotonic() >= deadline:
                raise LifecycleError(f"the deployment ran out of its {timeout_s:g} s before "
                                     f"{name} could start", component=name,
                                     log_path=self.runner.log_path(name))
            self.runner.start(name, steps[name], deadline=deadline)

    def stop(self, *, grace_s: float | None = None) -> None:
        """Stop every component the deployment started, dependents first."""
        self.runner.stop_all(grace_s)
