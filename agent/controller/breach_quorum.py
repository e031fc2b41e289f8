"""How much one device's word weighs: breaches a device reports about itself need
corroboration before they roll a rollout back fleet-wide.

**Device breaches** are what a device says of itself: a ``guardrail_breach`` or
``local_rollback`` event naming the rollout's candidate, and the guardrails computed
from one device's own latest report (``soc_temperature``, ``rss``: a verdict breach
``where`` ``device:<thing>``). A compromised device can send any of them at will, so:

- a device counts once however often it reports (its first breach is the one kept);
- only a device that this rollout has reached (sent the commands of a step begun so
  far) and that is not excluded (:meth:`agent.controller.runner.RolloutRunner.exclude`)
  counts;
- the rollout is rolled back fleet-wide when at least :func:`quorum` devices breach:
  the spec's ``guardrails.breach_quorum`` (default 2), or every device of the rollout
  when it has fewer;
- below that the breach is **held**: written once per device to the decisions log
  (kind ``breach_held``: the device, what it reported, the count against the quorum),
  and the step does not advance on its own: when its guardrails pass and its watch time
  is over, the rollout pauses instead, naming the devices, for an operator to
  ``promote`` (go on), ``abort`` (roll back) or ``resume`` (judge again). A device that
  breached locally has rolled itself back already, so holding costs the fleet nothing.

**Fleet breaches** (a class or group scope: p99, p99 ratio, error rate, agreement,
install failures) come from the merged histograms of every reporting device and need
``min_devices`` of them: they roll back at once, as before. A fleet that must not be
moved by one device's figures either sets ``min_devices`` above 1, or relies on the
ingest checks (:mod:`agent.controller.report_checks`) that refuse figures which cannot
be true.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.controller.guardrails import Breach
from agent.controller.state import ControllerState
from agent.wire.messages import Event

DEVICE_SCOPE = "device:"
HELD = "breach_held"  # the decisions-log kind of a held breach
EXCLUDED = "device_excluded"  # the decisions-log kind of a device left out of a rollout


def quorum(breach_quorum: int, devices: int) -> int:
    """Devices that must breach for a fleet-wide rollback: the spec's quorum, or every
    device of a rollout smaller than it (never less than one)."""
    return max(1, min(breach_quorum, devices))


def describe_event(event: Event) -> str:
    """What a device's breach event says, in one line for the log and the reason."""
    rule = event.data.get("rule") or event.data.get("metric") or ""
    return f"{event.kind} ({rule}) on {event.thing}: {event.detail}"[:300]


def split_breaches(breaches: Iterable[Breach]) -> tuple[list[Breach], dict[str, str]]:
    """The fleet-scoped breaches, and per device the description of its first
    device-scoped one."""
    fleet: list[Breach] = []
    devices: dict[str, str] = {}
    for breach in breaches:
        if breach.where.startswith(DEVICE_SCOPE):
            thing = breach.where.removeprefix(DEVICE_SCOPE)
            devices.setdefault(thing, f"{breach.rule} on {thing}: {breach.detail}"[:300])
        else:
            fleet.append(breach)
    return fleet, devices


def rollback_reason(breaching: Mapping[str, str], needed: int) -> str:
    """Why a corroborated device breach rolled the rollout back."""
    first = next(iter(breaching.values()))
    if len(breaching) == 1:
        return first
    return f"{len(breaching)} devices breached (quorum {needed}): {first}; also " + \
        ", ".join(sorted(breaching)[:10])


def held_reason(step_name: str, rollout_id: str, breaching: Mapping[str, str],
                needed: int) -> str:
    """Why a step whose fleet guardrails pass is paused: breaches below the quorum."""
    things = sorted(breaching)
    first = breaching[things[0]]
    more = f" (and {len(things) - 1} more device(s))" if len(things) > 1 else ""
    return (f"step {step_name}: breach held, not corroborated ({len(things)} of {needed} "
            f"devices needed for a fleet-wide rollback): {first}{more}; the fleet "
            f"guardrails pass: promote {rollout_id} to go on, or abort it")


def log_held(state: ControllerState, rollout_id: str, step_index: int, thing: str,
             what: str, *, devices: int, needed: int) -> None:
    state.log(rollout_id, HELD, step_index=step_index,
              detail={"thing": thing, "breach": what, "devices": devices, "quorum": needed})


def restore(state: ControllerState, rollout_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """After a restart: the held breaches and the excluded devices of ``rollout_id``, by
    thing, from its decisions log."""
    held: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for decision in state.decisions(rollout_id):
        thing = decision.detail.get("thing")
        if not isinstance(thing, str):
            continue
        if decision.kind == HELD:
            held.setdefault(thing, str(decision.detail.get("breach", "")))
        elif decision.kind == EXCLUDED:
            excluded.setdefault(thing, str(decision.detail.get("reason", "")))
    return held, excluded
