"""Finding and opening the native DLR library (``libdlr.so``) without importing ``dlr``.

Importing the ``dlr`` Python package (1.6.0) contacts ``api.neo-dlr.amazonaws.com``
unless an opt-out file exists first, so the agent never imports it: it locates
the library the package installed (``importlib.util.find_spec`` and the wheel's
file list read neither run the package) and binds the C API with ctypes.

Which ``libdlr.so`` wins
------------------------
A Neo artifact may ship its own ``libdlr.so``. Two different libdlr builds in
one process share TVM's global registries and are a known source of crashes,
so exactly one library is opened per process:

- ``library="installed"`` (default): the device's DLR — an explicit
  ``library_path``, ``$EDGE_AGENT_LIBDLR``, the ``dlr`` package's library, or a
  system install (Greengrass ``variant.DLR``, ``/usr/lib``, ``/usr/local/lib``).
  An artifact's own copy is ignored.
- ``library="artifact"``: the artifact's ``libdlr.so`` (its ELF architecture is
  checked first); refused if a different libdlr is already open in the process.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import ArtifactError, BackendUnavailableError, ModelLoadError
from agent.device.platform.elf import check_elf_arch

LIBNAME = "libdlr.so"
ENV_LIBRARY = "EDGE_AGENT_LIBDLR"

_SYSTEM_GLOBS = (
    "/usr/local/lib/libdlr.so",
    "/usr/lib/libdlr.so",
    "/usr/lib/*-linux-gnu*/libdlr.so",
    # Greengrass variant.DLR installs DLR into a virtual environment under its work dir.
    "/greengrass/v2/work/variant.DLR/**/libdlr.so",
)


def _package_candidates() -> list[Path]:
    """Where the ``dlr`` wheel puts libdlr.so, found without importing the package."""
    found: list[Path] = []
    try:
        for file in importlib.metadata.distribution("dlr").files or ():
            if file.name == LIBNAME:
                found.append(Path(str(file.locate())).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("dlr")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        # The same places dlr.libpath.find_lib_path searches, in its order.
        for base in (Path(sys.prefix) / "dlr", Path(sys.prefix) / "local" / "dlr",
                     Path(sys.exec_prefix) / "local" / "dlr", Path.home() / ".local" / "dlr",
                     pkg / ".." / ".." / "lib", pkg / "lib", pkg):
            found.append((base / LIBNAME).resolve())
    return found


def locate_installed(library_path: Path | None = None) -> Path:
    """Path of the device's installed libdlr, or :class:`BackendUnavailableError`."""
    explicit = library_path or (Path(os.environ[ENV_LIBRARY]) if os.environ.get(ENV_LIBRARY)
                                else None)
    if explicit is not None:
        if not explicit.is_file():
            raise BackendUnavailableError(f"libdlr not found at {explicit}")
        return explicit
    candidates = _package_candidates()
    for pattern in _SYSTEM_GLOBS:
        candidates.extend(Path(p) for p in sorted(glob.glob(pattern, recursive=True)))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BackendUnavailableError(
        "no libdlr.so found: install DLR (pip install dlr==1.6.0 on x86_64, Greengrass "
        f"variant.DLR or the neo-ai-dlr wheel on ARM) or set {ENV_LIBRARY}"
    )


@dataclass(frozen=True)
class DlrLibrary:
    """An opened libdlr with the C API's argument and result types declared."""

    path: Path
    cdll: ctypes.CDLL
    version: str


def _declare(lib: ctypes.CDLL) -> None:
    handle_p = ctypes.POINTER(ctypes.c_void_p)
    c_int, c_char_p, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
    i64_p, int_p = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int)
    str_p = ctypes.POINTER(ctypes.c_char_p)
    signatures: dict[str, list[object]] = {
        "CreateDLRModel": [handle_p, c_char_p, c_int, c_int],
        "DeleteDLRModel": [handle_p],
        "RunDLRModel": [handle_p],
        "GetDLRNumInputs": [handle_p, int_p],
        "GetDLRNumOutputs": [handle_p, int_p],
        "GetDLRInputName": [handle_p, c_int, str_p],
        "GetDLRInputType": [handle_p, c_int, str_p],
        "GetDLRInputSizeDim": [handle_p, c_int, i64_p, int_p],
        "GetDLRInputShape": [handle_p, c_int, i64_p],
        "GetDLROutputType": [handle_p, c_int, str_p],
        "GetDLROutputSizeDim": [handle_p, c_int, i64_p, int_p],
        "GetDLROutputShape": [handle_p, c_int, i64_p],
        "GetDLROutput": [handle_p, c_int, c_void_p],
        "GetDLROutputPtr": [handle_p, c_int, ctypes.POINTER(c_void_p)],
        "SetDLRInput": [handle_p, c_char_p, i64_p, c_void_p, c_int],
        "GetDLRBackend": [handle_p, str_p],
        "GetDLRVersion": [str_p],
        "SetDLRNumThreads": [handle_p, c_int],
    }
    for name, argtypes in signatures.items():
        func = getattr(lib, name)
        func.argtypes = argtypes
        func.restype = c_int
    lib.DLRGetLastError.argtypes = []
    lib.DLRGetLastError.restype = c_char_p


class _Opened:
    """The one libdlr this process has opened (a process-wide fact, hence shared)."""

    lock = threading.Lock()
    library: DlrLibrary | None = None


def open_library(path: Path) -> DlrLibrary:
    """Open ``path`` once per process; refuse a second, different libdlr."""
    real = path.resolve()
    with _Opened.lock:
        current = _Opened.library
        if current is not None:
            if current.path != real:
                raise ModelLoadError(
                    f"{real} cannot be loaded: {current.path} is already open in this process "
                    "and two libdlr builds in one process crash; restart with one choice"
                )
            return current
        try:
            check_elf_arch(real)
        except ArtifactError as err:
            raise BackendUnavailableError(f"unusable libdlr: {err}") from err
        try:
            cdll = ctypes.CDLL(str(real), mode=ctypes.RTLD_LOCAL)
            _declare(cdll)
        except (OSError, AttributeError) as err:
            raise BackendUnavailableError(f"cannot open {real}: {err}") from err
        out = ctypes.c_char_p()
        version = "unknown"
        if cdll.GetDLRVersion(ctypes.byref(out)) == 0 and out.value:
            version = out.value.decode()
        _Opened.library = DlrLibrary(path=real, cdll=cdll, version=version)
        return _Opened.library
