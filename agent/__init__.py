"""Edge inference agent: runs Neo-compiled (DLR) and ONNX models on Greengrass devices.

Importing the package pulls in no native runtime: each backend imports its own
library when it is first used, so ``import agent`` works on a device that has
only one of them.
"""

__version__ = "0.1.0"
