"""What the inference plans call so that capture rules can keep an inference's input.

The plans (:mod:`~agent.device.inference.plans`, :mod:`~agent.device.inference.
request_plans`) know nothing of rules or files: they take one :class:`CaptureHooks` and
call its members at fixed points, each of which must return at once (copying a few
tensors at most; the capture writer thread does the rest).

- ``served(lane, label)``: a served loop inference, called only when the plan's own
  countdown (started at ``first``) reaches zero; it returns the next countdown (>= 1).
  A rule set that must look at every inference (low confidence) returns 1; a random
  sample rate returns a geometric skip, so an unpicked inference costs the loop one
  decrement and one comparison.
- ``compared(blue, green, agreed, drift)``: every shadowed inference, after green ran and
  was compared with blue (``drift``: mean |blue - green| over the first output).
- ``failed(lane, error)``: a loop inference that failed, before anything else overwrites
  its input.
- ``request(request, variant, version, error)``: every answered API request, before its
  answer is sent (``error`` None on success); the hook looks at ``request.capture``
  (the application's ask) and at its sample countdown itself.
- ``shadowed(inputs, blue, green, agreed, drift)``: a shadowed API request, after the
  request path's shadow worker ran green on it and compared (on the worker's thread, after
  the answer was sent); the arrays are the worker's and are reused once it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from agent.core.errors import AgentError
    from agent.device.inference.lane import Lane
    from agent.device.inference.requests import InferenceRequest

Served = Callable[["Lane", int], int]
Compared = Callable[["Lane", "Lane", bool, float], None]
Failed = Callable[["Lane", Exception], None]
Answered = Callable[["InferenceRequest", str, str, "AgentError | None"], None]
Arrays = tuple["np.ndarray", ...]
Shadowed = Callable[[Arrays, Arrays, Arrays, bool, float], None]


@dataclass(frozen=True)
class CaptureHooks:
    """The capture tap's entry points (any may be None: that point is not watched)."""

    served: Served | None = None
    first: int = 1  # the served countdown's start
    compared: Compared | None = None
    failed: Failed | None = None
    request: Answered | None = None
    shadowed: Shadowed | None = None


@dataclass(frozen=True)
class CaptureAsk:
    """An application's request to keep this request's input (``capture=true`` on the API),
    with its own label or note for whoever trains on it."""

    label: str | None = None
    note: str | None = None
