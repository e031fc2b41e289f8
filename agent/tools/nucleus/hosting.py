"""Running components on the emulated nucleus: :meth:`launch` one process by hand, or
:meth:`deploy` a whole deployment and follow its lifecycle states. A mixin of
:class:`~agent.tools.nucleus.server.EmulatedNucleus`, kept apart for size.

Deploying components from a component store (see :mod:`~agent.tools.nucleus.components`)
and running their lifecycles as processes::

    with EmulatedNucleus.from_store("build/store", {"com.example.App": None},
                                    thing_name="demo-1", provided={"variant.DLR"}) as nucleus:
        nucleus.deploy(timeout_s=300)     # artifacts, install, startup/run, in order
        nucleus.component_states("com.example.App")
    # leaving the block stops the components (SIGTERM, then SIGKILL), then the nucleus

``deploy()`` blocks: from asyncio code, run it in an executor.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.tools.greengrass.recipe import RecipeError, host_platform
from agent.tools.nucleus.components import ComponentStore, DeploymentPlan
from agent.tools.nucleus.deployment import Deployment, variable_scope
from agent.tools.nucleus.env import component_env
from agent.tools.nucleus.errors import NucleusError
from agent.tools.nucleus.identity import ComponentIdentity
from agent.tools.nucleus.lifecycle import StateReport
from agent.tools.nucleus.runner import ComponentState, lifecycle_steps
from agent.tools.nucleus.strict_variables import resolve_variables
from agent.tools.nucleus.token_exchange import AUTH_TOKEN_ENV, FULL_URI_ENV, TokenExchange


class ComponentHosting(ComponentIdentity):
    """Component processes of a nucleus (the methods below are EmulatedNucleus's)."""

    root_dir: Path
    _plan: DeploymentPlan | None
    _deployment: Deployment | None
    token_exchange: TokenExchange

    if TYPE_CHECKING:  # provided by EmulatedNucleus
        @property
        def running(self) -> bool: ...

        def get_configuration(self, key_path: Sequence[str] = (), *,
                              component: str | None = None) -> Any: ...

        def state_reports(self) -> list[StateReport]: ...

    # ---- one process ---------------------------------------------------------------

    def component_env(self, component: str | None = None, *,
                      base: Mapping[str, str] | None = None,
                      setenv: Mapping[str, str] | None = None) -> dict[str, str]:
        """A component process's environment: ``base`` (default: this process's), the
        recipe's ``Setenv`` (default: its run step's), then the nucleus's IPC variables and,
        only for a component that depends on the token exchange service, its two."""
        name = self._name(component)
        env = component_env(socket_path=self.socket_path, svcuid=self._tokens[name],
                            thing_name=self.thing_name, region=self.region, base=base,
                            setenv=self._setenv(name) if setenv is None else setenv)
        for variable in (FULL_URI_ENV, AUTH_TOKEN_ENV):
            env.pop(variable, None)
        env.update(self.token_exchange.env(name))
        return env

    def _setenv(self, name: str) -> dict[str, str]:
        """The recipe's ``Setenv`` for this machine's manifest, if it has one."""
        os_name, arch = host_platform()
        try:
            step = self.recipes[name].run_step(os=os_name, architecture=arch)
        except RecipeError:
            return {}
        return dict(step.setenv) if step else {}

    def work_dir(self, component: str | None = None) -> Path:
        return self.root_dir / "work" / self._name(component)

    def launch(self, component: str | None = None, *, argv: Sequence[str] | None = None,
               cwd: str | Path | None = None, extra_env: Mapping[str, str] | None = None,
               **popen: Any) -> subprocess.Popen[bytes]:
        """Start a component process with the nucleus's environment, in its work folder.
        Without ``argv`` the recipe's lifecycle ``run`` script is run through ``sh -c``
        with its recipe variables filled in, as a nucleus runs it."""
        name = self._name(component)
        work = self.work_dir(name)
        work.mkdir(parents=True, exist_ok=True)
        if argv is None:
            argv = ["sh", "-c", self._run_script(name)]
        env = self.component_env(name)
        env.update(extra_env or {})
        return subprocess.Popen(list(argv), cwd=cwd or work, env=env, **popen)

    def _run_script(self, name: str) -> str:
        os_name, arch = host_platform()
        recipe = self.recipes[name]
        scope = variable_scope(recipe, deployed=self.recipes, root_dir=self.root_dir,
                               thing_name=self.thing_name,
                               configuration=lambda n: self.get_configuration(component=n))
        steps = lifecycle_steps(recipe.manifest_for(os=os_name, architecture=arch).lifecycle,
                                lambda text: resolve_variables(text, scope))
        if "run" not in steps:
            raise RecipeError(f"{name} has no lifecycle run step for {os_name}/{arch}")
        return steps["run"].script

    # ---- deployment: artifacts and lifecycle processes -----------------------------

    def deploy(self, *, timeout_s: float | None = None) -> DeploymentPlan:
        """Install the artifacts of every component, then run their lifecycles in
        dependency order (see :mod:`agent.tools.nucleus.deployment`). Returns once
        every component with a run step is RUNNING (its process started); raises a
        DeploymentError naming the component (and, for a failed step, its log) otherwise.
        Deploying again restarts the components. Needs the nucleus running."""
        if not self.running:
            raise NucleusError("start the nucleus before deploying: components connect to it")
        if self._deployment is None:
            plan = self._plan or ComponentStore(None, self.recipes.values()).resolve(
                {name: None for name in self.recipes})
            self._deployment = Deployment(
                plan, root_dir=self.root_dir, thing_name=self.thing_name,
                configuration=lambda n: self.get_configuration(component=n),
                env_for=lambda n, setenv: self.component_env(n, setenv=setenv))
        self._deployment.deploy(timeout_s=timeout_s)
        return self._deployment.plan

    def process(self, component: str | None = None) -> subprocess.Popen[bytes] | None:
        """The running process of a component's run (or startup) step, if any."""
        name = self._name(component)
        return self._deployment.runner.process(name) if self._deployment else None

    def lifecycle_states(self, component: str | None = None) -> list[ComponentState]:
        """The states the nucleus moved a deployed component through, oldest first."""
        name = self._name(component)
        return self._deployment.runner.states(name) if self._deployment else []

    def component_states(self, component: str | None = None) -> list[ComponentState]:
        """One timeline: the nucleus's lifecycle states (``source="nucleus"``) and the
        component's UpdateState reports (``source="component"``), in time order."""
        name = self._name(component)
        reported = [ComponentState(r.state, "component", r.at) for r in self.state_reports()
                    if r.component == name]
        return sorted([*self.lifecycle_states(name), *reported], key=lambda s: s.at)

    def log_path(self, component: str | None = None) -> Path:
        """Where a component's lifecycle output goes: ``<root>/logs/<Name>.log``."""
        return self.root_dir / "logs" / f"{self._name(component)}.log"

    def stop_components(self, *, timeout_s: float | None = None) -> None:
        """Stop the deployed components, dependents first: each gets its shutdown step,
        SIGTERM, ``timeout_s`` (default 5 s, as a real nucleus) to exit, then SIGKILL."""
        if self._deployment is not None:
            self._deployment.stop(grace_s=timeout_s)

