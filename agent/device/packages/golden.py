"""Golden vectors, reproduced on the device before a package may serve.

The manifest carries them (computed when packaging, by
:mod:`agent.tools.packaging.golden`). The check runs in a child process
(:mod:`agent.device.packages.golden_check`) so that a kernel that faults or never
returns takes only that child down; this module maps how the child ended to a
typed error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import agent
from agent.device.packages.errors import (
    GoldenCrashError,
    GoldenMismatchError,
    GoldenRuntimeError,
    GoldenTimeoutError,
    TensorSpecMismatchError,
)
from agent.device.packages.golden_check import EXIT_MISMATCH, EXIT_OK, EXIT_RUNTIME, EXIT_SPECS
from agent.device.runtime import BackendConfig, DlrConfig

_MAX_DETAIL = 300


def run_golden_check(package_dir: Path, *, timeout_s: float,
                     library_path: Path | None = None, label: str | None = None,
                     config: BackendConfig | None = None) -> None:
    """Reproduce the manifest's golden vectors in a child process; raise unless they match.

    ``config`` is the device's runtime settings: a package of that runtime is checked with
    them, one of the other runtime with its defaults. ``label`` names the package in error
    messages (default: the directory's name).
    """
    name = label or package_dir.name
    command = ["agent.device.packages.golden_check", str(package_dir.resolve())]
    if library_path is not None:
        command += ["--libdlr", str(library_path.resolve())]
    if isinstance(config, DlrConfig) and config.library_path is not None:
        # the child runs elsewhere (see below): a relative path must mean the same file
        config = config.model_copy(update={"library_path": config.library_path.resolve()})
    if config is not None:
        command += ["--config", config.model_dump_json()]
    code, detail = run_child(command, timeout_s=timeout_s)
    if code is None:
        raise GoldenTimeoutError(f"golden check of {name} did not finish in {timeout_s:g} s; "
                                 "killed")
    if code == EXIT_OK:
        return
    if code < 0:
        died_of = signal_name(-code)
        raise GoldenCrashError(f"golden check of {name} died of {died_of}: {detail}",
                               signal_name=died_of)
    if code == EXIT_MISMATCH:
        raise GoldenMismatchError(f"{name}: {detail}")
    if code == EXIT_SPECS:
        raise TensorSpecMismatchError(f"{name}: {detail}")
    if code == EXIT_RUNTIME:
        raise GoldenRuntimeError(f"{name}: {detail}")
    raise GoldenRuntimeError(f"golden check of {name} exited {code}: {detail}")


def run_child(command: list[str], *, timeout_s: float) -> tuple[int | None, str]:
    """Run ``python -m <command>`` as a child in its own session; ``(exit status, detail)``.

    The status is negative for a child that died of a signal, and None when it ran past
    ``timeout_s`` and was killed with everything it started. ``detail`` is the child's
    reason (:func:`_child_detail`). A native fault or hang in the child's code ends only
    the child: the golden check and the importer's reference run both run foreign kernels
    this way.
    """
    # `python -m` puts its working directory first on sys.path: run where this very
    # `agent` package lies, so the child imports the same code and nothing else.
    package_root = Path(agent.__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             cwd=package_root, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        child.communicate()
        return None, ""
    except BaseException:
        _kill_group(child)
        child.communicate()
        raise
    return child.returncode, _child_detail(stdout, stderr)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child started with ``start_new_session=True`` and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11: how a child that died of a signal is reported."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _child_detail(stdout: bytes, stderr: bytes) -> str:
    """The child's JSON verdict (a stdout line with a ``message``) if it printed one, else
    the end of its stderr: the reason a child check gives, for an error message."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and "message" in verdict:
            return str(verdict["message"])[:_MAX_DETAIL]
    tail = stderr.decode(errors="replace").strip().splitlines()
    return tail[-1][:_MAX_DETAIL] if tail else "no output"
