"""Client of the agent's local inference API for applications on the device: the native
protocol over the agent's Unix socket, with tensors in shared memory.

The fast path for a Python application beside the agent (a camera process, another
Greengrass component): :class:`InferenceClient` sends a request over the socket and
returns the outputs, and a :class:`SharedRegion` registered with the agent lets inputs
and outputs stay in shared memory, read and written in place by the runtime. It imports
only :mod:`agent.wire` and :mod:`agent.core` (numpy and pydantic): no runtime, no device
code.

Modules and their public names:

- ``native``: ``InferenceClient``, ``ClientResult``, ``ModelDescription``
- ``regions``: ``SharedRegion``, ``RegionRef``, ``TensorLayout``, ``Placement``,
  ``region_for`` (+1)
"""

from agent.client.native import ClientResult, InferenceClient, ModelDescription
from agent.client.regions import RegionRef, SharedRegion, TensorLayout, region_for

__all__ = ["ClientResult", "InferenceClient", "ModelDescription", "RegionRef",
           "SharedRegion", "TensorLayout", "region_for"]
