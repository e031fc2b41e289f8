"""Edge inference agent: runs Neo-compiled (DLR) and ONNX models on Greengrass devices.

Importing the package pulls in no native runtime: each backend imports its own
library when it is first used, so ``import agent`` works on a device that has
only one of them.

Floors, each importing only those below it (``cli > tools > controller | device > wire >
core``, checked by the import-linter contract in ``pyproject.toml``):

- ``cli``: the ``edge-agent`` command line
- ``tools``: host and cloud tooling (packaging, components, emulation, demos, benchmarks)
- ``controller``: the fleet rollout controller
- ``device``: everything that runs on a device
- ``producer``: the API a camera process uses to write frames into the agent's ring
- ``client``: the native client of the local inference API, for applications on the device
- ``wire``: the device-cloud contract
- ``core``: errors, model layout, histogram, durable writes
- ``lambda_handler``: the Greengrass Lambda entry point ``agent.lambda_handler.handler``
"""

__version__ = "0.1.0"
