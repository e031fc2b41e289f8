"""A state directory the agent cannot write, at start: waited out, never crashed on.

A state directory goes read-only when its file system is remounted read-only after an
error, when it has the wrong owner, or when someone runs ``chmod``. Nothing the agent
keeps there (model store, spool, sequence, replay marks) can then be opened safely, so at
start the agent does not build anything on it: it logs a
:class:`~agent.wire.errors.StateFileError` naming the directory and the reason (once per
:data:`LOG_EVERY_S`), tries again every :data:`RETRY_S` seconds, and starts as soon as
writes work again. A supervisor (the Greengrass nucleus) sees one long-running process,
not one that exits and is restarted in a loop.

Should the directory go read-only while the agent runs, it keeps serving: the files it
has open stay writable, and what needs a new file fails with a typed error and is
counted (a message that cannot be numbered durably is not sent, see
:class:`~agent.device.uplink.outbox.Outbox`), then reported once writes work again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from agent.wire.errors import StateFileError

__all__ = ["LOG_EVERY_S", "RETRY_S", "state_dir_problem", "wait_until_writable"]

RETRY_S = 2.0
LOG_EVERY_S = 60.0
log = logging.getLogger("edge_agent")


def state_dir_problem(path: Path) -> StateFileError | None:
    """Why the agent cannot write ``path`` and the files it keeps there (None: it can)."""
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
        kept = [p for p in (*path.iterdir(), path / "models", path / "models" / "lock")
                if p.exists() and not p.is_symlink()]
    except OSError as err:
        return StateFileError(f"state directory {path} is not writable: "
                              f"{err.strerror or err}")
    stuck = [p for p in kept if not os.access(p, os.W_OK)]
    if stuck:
        return StateFileError(f"state directory {path}: {stuck[0].name} is not writable"
                              + (f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else ""))
    return None


def wait_until_writable(path: Path, stop: threading.Event, *, retry_s: float = RETRY_S,
                        log_every_s: float = LOG_EVERY_S) -> bool:
    """Return once ``path`` is writable (True), or once ``stop`` is set (False)."""
    last_logged = -float("inf")
    waited_since = time.monotonic()
    while (problem := state_dir_problem(path)) is not None:
        now = time.monotonic()
        if now - last_logged >= log_every_s:
            log.error("%s: %s; waiting for write access (trying every %g s)",
                      type(problem).__name__, problem, retry_s)
            last_logged = now
        if stop.wait(retry_s):
            return False
    if last_logged > -float("inf"):
        log.warning("state directory %s is writable again after %.0f s: starting", path,
                    time.monotonic() - waited_since)
    return True
