"""Everything that runs on a device: platform, runtimes, inference, packages, store, uplink.

Modules and their public names:

- ``app``/
- ``greengrass``/
- ``inference``/
- ``lambda_function``/
- ``packages``/
- ``platform``/
- ``runtime``/: ``BACKENDS``, ``Backend``, ``BackendClass``, ``BackendConfig``,
  ``DlrBackend`` (+7)
- ``store``/
- ``telemetry``/
- ``uplink``/
"""
