"""The DLR backend: the real libdlr.so bound through ctypes, and the Neo/TVM artifact format it
loads.
"""
