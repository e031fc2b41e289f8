"""An emulated AWS IoT Greengrass v2 nucleus: the IPC server a component talks to.

It speaks the event-stream RPC protocol of the real nucleus on a Unix socket, so the
real ``awsiot.greengrasscoreipc`` client connects to it unchanged, and it enforces the
recipe's ``accessControl`` as a real nucleus does. IoT Core is a real MQTT broker.
Run ``python -m agent.emulation.nucleus --help`` for the command line.
"""

from agent.emulation.nucleus.errors import (
    FramingError,
    IpcServiceError,
    NucleusError,
    RecipeError,
)
from agent.emulation.nucleus.lifecycle import ComponentUpdate, Deferral, StateReport
from agent.emulation.nucleus.recipe import Recipe
from agent.emulation.nucleus.server import EmulatedNucleus

__all__ = [
    "ComponentUpdate",
    "Deferral",
    "EmulatedNucleus",
    "FramingError",
    "IpcServiceError",
    "NucleusError",
    "Recipe",
    "RecipeError",
    "StateReport",
]
