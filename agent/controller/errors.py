"""Errors of the fleet controller (its branch; the whole tree of the package's errors is
drawn in :mod:`agent.core.errors`)::

    AgentError
    └── FleetError                  the fleet controller refused or failed something
        ├── SpecError               a rollout spec that does not validate (names the field)
        ├── FleetFileError          a fleet (groups) file that cannot be read or parsed
        ├── PlanError               a spec and a fleet that cannot be planned together
        │   └── OverlapError        its devices are in another unfinished rollout
        ├── RolloutExistsError      a rollout of that name exists already
        ├── FleetStateError         the controller's durable state is unusable
        │   └── DecisionConflictError  a second, different decision for a device's step
        └── ReportRejectedError     a device report refused at ingest (names its reason)
"""

from __future__ import annotations

from agent.core.errors import AgentError


class FleetError(AgentError):
    """The fleet controller refused or failed something."""


class SpecError(FleetError):
    """A rollout spec is invalid; the message starts with the field path
    (``strategy.steps: must be >= 1``), which :attr:`field` also holds."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class FleetFileError(FleetError):
    """A fleet file (``{groups: {name: [things]}}``) cannot be read or parsed."""


class PlanError(FleetError):
    """The spec cannot be planned over these devices (e.g. no device at all)."""


class OverlapError(PlanError):
    """Devices of the new rollout are in a rollout that has not ended: one at a time."""


class RolloutExistsError(FleetError):
    """A rollout of this name exists (ended, or running with another spec)."""


class FleetStateError(FleetError):
    """The controller's SQLite state cannot be opened, read or written."""


class DecisionConflictError(FleetStateError):
    """A device's step already holds a different decision: it is never sent a second one."""


class ReportRejectedError(FleetError):
    """A device report the controller refused at ingest: :attr:`reason` is the counted kind
    (``counts_decreased``, ``count_out_of_range``, ...), the message says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
