"""An emulated AWS IoT Greengrass v2 nucleus: the IPC server a component talks to.

It speaks the event-stream RPC protocol of the real nucleus on a Unix socket, so the
real ``awsiot.greengrasscoreipc`` client connects to it unchanged, and it enforces the
recipe's ``accessControl`` as a real nucleus does. IoT Core is a real MQTT broker.
It also deploys components from a local component store (``EmulatedNucleus.from_store``,
``deploy()``): artifacts checked and installed, lifecycles run as real processes.
Run ``python -m agent.emulation.nucleus --help`` for the command line.
"""

from agent.emulation.nucleus.components import (
    ArtifactError,
    ComponentStore,
    DependencyError,
    DeploymentError,
    DeploymentPlan,
    LifecycleError,
    PlatformError,
)
from agent.emulation.nucleus.errors import (
    FramingError,
    IpcServiceError,
    NucleusError,
)
from agent.emulation.nucleus.lifecycle import ComponentUpdate, Deferral, StateReport
from agent.emulation.nucleus.runner import ComponentState
from agent.emulation.nucleus.server import EmulatedNucleus
from agent.emulation.nucleus.variables import UnresolvedVariableError
from agent.greengrass.recipe import Recipe, RecipeError

__all__ = [
    "ArtifactError",
    "ComponentState",
    "ComponentStore",
    "ComponentUpdate",
    "Deferral",
    "DependencyError",
    "DeploymentError",
    "DeploymentPlan",
    "EmulatedNucleus",
    "FramingError",
    "IpcServiceError",
    "LifecycleError",
    "NucleusError",
    "PlatformError",
    "Recipe",
    "RecipeError",
    "StateReport",
    "UnresolvedVariableError",
]
