"""Named crash points: the agent kills itself at an exact step, so tests can prove recovery.

Set ``EDGE_AGENT_CRASH_AT=<name>`` and the process SIGKILLs itself the first time it
reaches :func:`crash_point` with that name; ``<name>:<N>`` waits for the N-th time, counted
per process (for points reached repeatedly, e.g. both pointer switches of one promote).
SIGKILL, not an exception: no ``finally``, no ``atexit``, no buffered flush runs, which is
the closest a test gets to pulling the plug without losing the page cache.

Unset (production), a crash point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "EDGE_AGENT_CRASH_AT"

CRASH_POINTS: tuple[str, ...] = (
    # staging (download and extraction of a package)
    "mid-download",
    "mid-extract",
    # model store (agent/device/store/store.py, agent/device/store/durable.py)
    "after-version-copy",
    "before-verified-marker",
    "before-pointer-rename",
    "after-rename-before-dir-fsync",
    "after-trial-marker",
    "after-rollback-intent",
    "mid-prune",
    # activation
    "mid-load",
    "during-trial",
    # fleet controller (agent/controller/controller.py)
    "controller-after-decide",
    "controller-after-publish",
    "controller-mid-rollback",
)

# Per-process hit counts for ``name:N``. Process-wide by nature (the count must survive
# whichever object reaches the point), touched only while EDGE_AGENT_CRASH_AT is set.
_hits: Counter[str] = Counter()


def parse_crash_spec(spec: str) -> tuple[str, int]:
    """``"name"`` -> (name, 1); ``"name:3"`` -> (name, 3). Raises ValueError."""
    name, sep, count = spec.partition(":")
    occurrence = int(count) if sep else 1
    if name not in CRASH_POINTS:
        raise ValueError(f"{CRASH_ENV}: unknown crash point {name!r}")
    if occurrence < 1:
        raise ValueError(f"{CRASH_ENV}: occurrence must be >= 1, got {occurrence}")
    return name, occurrence


def crash_point(name: str) -> None:
    """SIGKILL this process if ``EDGE_AGENT_CRASH_AT`` names this point (and occurrence)."""
    if name not in CRASH_POINTS:
        raise ValueError(f"crash point {name!r} is not listed in CRASH_POINTS")
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, occurrence = parse_crash_spec(spec)
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] == occurrence:
        os.kill(os.getpid(), signal.SIGKILL)
