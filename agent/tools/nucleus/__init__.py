"""An emulated AWS IoT Greengrass v2 nucleus: the IPC server a component talks to.

It speaks the event-stream RPC protocol of the real nucleus on a Unix socket, so the
real ``awsiot.greengrasscoreipc`` client connects to it unchanged, and it enforces the
recipe's ``accessControl`` as a real nucleus does. IoT Core is a real MQTT broker.
It also deploys components from a local component store (``EmulatedNucleus.from_store``,
``deploy()``): artifacts checked and installed, lifecycles run as real processes.
Components that depend on ``aws.greengrass.TokenExchangeService`` get AWS credentials
from its emulation, as from a real nucleus's built-in one (``token_exchange``).
Run ``python -m agent.tools.nucleus --help`` for the command line.

Modules and their public names:

- ``artifacts``: ``artifacts_path``, ``decompressed_path``, ``artifact_file_name``,
  ``file_mode``, ``install_artifacts``
- ``components``: ``DeploymentError``, ``DependencyError``, ``PlatformError``,
  ``ComponentArtifactError``, ``LifecycleError`` (+3)
- ``config``: ``ConfigStore``, ``merge``, ``config_operations``
- ``connection``: ``Connection``
- ``deployment``: ``Deployment``, ``component_paths``, ``variable_scope``
- ``env``: ``ipc_env``, ``component_env``
- ``errors``: ``NucleusError``, ``FramingError``, ``IpcServiceError``, ``unauthorized``,
  ``invalid_arguments`` (+2)
- ``eventstream``: ``HeaderType``, ``Header``, ``Message``, ``FrameDecoder``, ``encode``
- ``hosting``: ``ComponentHosting``
- ``identity``: ``ComponentIdentity``
- ``iotcore``: ``IoTCoreLink``, ``LoopbackIoTCore``, ``MqttBridge``, ``IoTCoreProxy``,
  ``broker_answer``
- ``iotcore_transport``: ``TransportBridge``
- ``lifecycle``: ``StateReport``, ``Deferral``, ``ComponentUpdate``, ``Lifecycle``
- ``loop_thread``: ``LoopThread``, ``call_in_loop``
- ``operations``: ``Operation``, ``Stream``
- ``policy``: ``authorize``
- ``pubsub``: ``LocalPubSub``
- ``rpc``: ``MessageType``, ``rpc_message``, ``json_message``, ``int_header``,
  ``str_header``
- ``runner``: ``DEFAULT_TIMEOUT_S``, ``STOP_GRACE_S``, ``ComponentRunner``,
  ``ComponentState``, ``Phase`` (+3)
- ``server``: ``EmulatedNucleus``, ``parse_broker``
- ``steps``: ``Step``, ``lifecycle_steps``, ``should_skip``
- ``strict_variables``: ``UnresolvedVariableError``, ``ComponentPaths``, ``VariableScope``,
  ``resolve_variables``
- ``threaded``: ``ThreadedNucleus``
- ``token_exchange``: ``TesCredentials``, ``TokenExchange``, ``dependents``,
  ``TOKEN_EXCHANGE_SERVICE``, ``CREDENTIALS_PATH`` (+4)
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
