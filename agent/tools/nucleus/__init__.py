"""An emulated AWS IoT Greengrass v2 nucleus: the IPC server a component talks to.

It speaks the event-stream RPC protocol of the real nucleus on a Unix socket, so the
real ``awsiot.greengrasscoreipc`` client connects to it unchanged, and it enforces the
recipe's ``accessControl`` as a real nucleus does. IoT Core is a real MQTT broker.
It also deploys components from a local component store (``EmulatedNucleus.from_store``,
``deploy()``): artifacts checked and installed, lifecycles run as real processes.
Run ``python -m agent.tools.nucleus --help`` for the command line.
"""

from agent.tools.greengrass.recipe import Recipe, RecipeError
from agent.tools.nucleus.components import (
    ComponentArtifactError,
    ComponentStore,
    DependencyError,
    DeploymentError,
    DeploymentPlan,
    LifecycleError,
    PlatformError,
)
from agent.tools.nucleus.errors import (
    FramingError,
    IpcServiceError,
    NucleusError,
)
from agent.tools.nucleus.lifecycle import ComponentUpdate, Deferral, StateReport
from agent.tools.nucleus.runner import ComponentState
from agent.tools.nucleus.server import EmulatedNucleus
from agent.tools.nucleus.strict_variables import UnresolvedVariableError

__all__ = [
    "ComponentArtifactError",
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
