"""Which runtime settings load a package: those of the backend its manifest names.

A device is configured with one runtime (``backend`` in its settings), but the packages it
takes say their own: a DLR package (a Neo artifact) loads through libdlr, an ONNX package
through ONNX Runtime. A package of the configured runtime gets the configured settings
(the device's libdlr, thread count, execution providers); one of the other runtime gets
that runtime's defaults. The golden check, the swap controller, start-up and the Lambda
loader all ask here, so a package is verified with the settings that will serve it.
"""

from __future__ import annotations

from agent.device.packages.manifest import Backend as PackageBackend
from agent.device.runtime import BackendConfig, DlrConfig, OnnxConfig


def package_backend_config(backend: PackageBackend,
                           configured: BackendConfig | None) -> BackendConfig:
    """The settings a package of ``backend`` loads with on a device configured with
    ``configured`` (None: every runtime's defaults)."""
    if backend == "onnx":
        return configured if isinstance(configured, OnnxConfig) else OnnxConfig()
    return configured if isinstance(configured, DlrConfig) else DlrConfig()
