"""Everything that runs on a device: platform, runtimes, inference, the local
inference API, packages, store, uplink.

Modules and their public names:

- ``app``/
- ``capture``/
- ``greengrass``/
- ``inference``/
- ``lambda_function``/
- ``packages``/
- ``platform``/
- ``results``/
- ``runtime``/: ``BACKENDS``, ``Backend``, ``BackendClass``, ``BackendConfig``,
  ``DlrBackend`` (+8)
- ``serving``/
- ``store``/
- ``telemetry``/
- ``uplink``/
"""
