"""The DLR runtime: its settings and backend (:mod:`~agent.device.runtime.dlr.backend`), the
real libdlr.so bound through ctypes (:mod:`~agent.device.runtime.dlr.library`), and the
Neo/TVM artifact format it loads (:mod:`~agent.device.runtime.dlr.neo_format`).
"""

from agent.device.runtime.dlr.backend import DlrBackend, DlrConfig

__all__ = ["DlrBackend", "DlrConfig"]
