"""Who each component is to the emulated nucleus: its SVCUID, the token it authenticates
its IPC connection with, and the IPC environment that carries it. A mixin of
:class:`~agent.tools.nucleus.server.EmulatedNucleus`, kept apart for size.

The first recipe is the main component, which the methods that take an optional
``component`` mean when given none::

    env = nucleus.ipc_env()   # socket path, SVCUID, thing name and region, as a nucleus sets
"""

from __future__ import annotations

import secrets

from agent.tools.greengrass.recipe import Recipe
from agent.tools.nucleus.env import ipc_env
from agent.tools.nucleus.errors import NucleusError


class ComponentIdentity:
    """The components' names and SVCUIDs (the methods below are EmulatedNucleus's)."""

    thing_name: str
    region: str
    socket_path: str
    recipes: dict[str, Recipe]
    _tokens: dict[str, str]  # component name -> SVCUID

    @property
    def main_component(self) -> str:
        """The component of the first recipe."""
        return next(iter(self.recipes))

    @property
    def svcuid(self) -> str:
        """The main component's SVCUID."""
        return self._tokens[self.main_component]

    def svcuid_for(self, component: str) -> str:
        """The SVCUID a component's process authenticates with."""
        return self._tokens[self._name(component)]

    def ipc_env(self, component: str | None = None) -> dict[str, str]:
        """Only the variables a nucleus sets for a component's IPC (see also
        ``component_env``, the whole environment of its process)."""
        return ipc_env(socket_path=self.socket_path, svcuid=self._tokens[self._name(component)],
                       thing_name=self.thing_name, region=self.region)

    def _name(self, component: str | None) -> str:
        """``component``, checked to be on this nucleus; the main component for None."""
        if component is None:
            return self.main_component
        if component not in self.recipes:
            raise NucleusError(f"no component {component!r} on this nucleus")
        return component

    def _authenticate(self, token: str) -> str | None:
        """The component whose SVCUID ``token`` is, if any."""
        for name, known in self._tokens.items():
            if secrets.compare_digest(known, token):
                return name
        return None
