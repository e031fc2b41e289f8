"""A recipe's lifecycle steps as the emulated nucleus runs them (see
:mod:`~agent.tools.nucleus.runner`).

A manifest's ``install``, ``startup``, ``run`` and ``shutdown`` steps become
:class:`Step` objects: the script and ``Skipif`` with their recipe variables filled in,
the lifecycle's ``Setenv`` overlaid by the step's, and the step's timeout or the
nucleus's default (install and startup 120 s, shutdown 15 s, run none). ``Skipif`` is
``exists PATH`` or ``onpath EXECUTABLE``, ``!`` negating; a lifecycle has a startup or a
run step, not both. ``bootstrap`` and ``recover`` are not run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from agent.tools.greengrass.recipe import Lifecycle, LifecycleStep, RecipeError

Phase = Literal["install", "startup", "run", "shutdown"]
DEFAULT_TIMEOUT_S: dict[str, float | None] = {"install": 120.0, "startup": 120.0,
                                              "shutdown": 15.0, "run": None}
_SKIPIF = re.compile(r"(!?)\s*(exists|onpath) +(.+)")


@dataclass(frozen=True)
class Step:
    """A lifecycle step with its recipe variables filled in."""

    phase: Phase
    script: str
    setenv: Mapping[str, str]
    timeout_s: float | None
    skipif: str | None = None


def lifecycle_steps(lifecycle: Lifecycle | None,
                    fill: Callable[[str], str]) -> dict[Phase, Step]:
    """The steps of a manifest's lifecycle, their scripts and Skipif put through ``fill``."""
    steps: dict[Phase, Step] = {}
    if lifecycle is None:
        return steps
    phases: tuple[Phase, ...] = ("install", "startup", "run", "shutdown")
    for phase in phases:
        raw = getattr(lifecycle, phase)
        if raw is None:
            continue
        step = raw if isinstance(raw, LifecycleStep) else LifecycleStep(Script=raw)
        skipif = fill(step.skipif) if step.skipif else None
        if skipif is not None and _SKIPIF.fullmatch(skipif.strip()) is None:
            raise RecipeError(f"{phase} Skipif {skipif!r} is not 'exists PATH' or "
                              "'onpath EXECUTABLE'")
        timeout = float(step.timeout) if step.timeout is not None else DEFAULT_TIMEOUT_S[phase]
        steps[phase] = Step(phase=phase, script=fill(step.script), timeout_s=timeout,
                            setenv={**lifecycle.setenv, **step.setenv}, skipif=skipif)
    if "startup" in steps and "run" in steps:
        raise RecipeError("a lifecycle has a startup or a run step, not both")
    return steps


def should_skip(skipif: str | None, env: Mapping[str, str]) -> bool:
    """Whether a step's ``Skipif`` (checked by :func:`lifecycle_steps`) skips it, the
    executable looked up on ``env``'s ``PATH``."""
    if not skipif:
        return False
    match = _SKIPIF.fullmatch(skipif.strip())
    assert match is not None  # checked by lifecycle_steps
    negate, check, target = match.group(1), match.group(2), match.group(3).strip()
    if check == "exists":
        found = os.path.exists(os.path.expanduser(target))
    else:
        found = shutil.which(os.path.expanduser(target), path=env.get("PATH")) is not None
    return found != bool(negate)
