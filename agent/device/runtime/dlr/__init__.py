"""The DLR runtime: settings and backend, the real libdlr.so via ctypes, the Neo format.

Modules and their public names:

- ``backend``: ``DlrConfig``, ``DlrBackend``
- ``library``: ``DlrLibrary``, ``locate_installed``, ``open_library``
- ``neo_format``: ``GraphSummary``, ``check_files``, ``read_graph``, ``read_params_index``,
  ``validate_artifact``
"""

from agent.device.runtime.dlr.backend import DlrBackend, DlrConfig

__all__ = ["DlrBackend", "DlrConfig"]
