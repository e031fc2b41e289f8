"""What the device says about itself: register, heartbeat, metrics and state messages, and
the ``status`` and ``announce`` commands that ask for them.

Everything here is read from views: the router's lanes and snapshot, the swap
controller's rollout and trial, the health probe. Nothing here changes what serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent import __version__
from agent.device.app.commands import Result
from agent.device.app.config import AgentConfig
from agent.device.app.swaps import SwapController
from agent.device.inference.router import VariantRouter
from agent.device.platform.profile import DeviceProfile
from agent.device.results.stream import ResultStream
from agent.device.telemetry.emf import emf_lines
from agent.device.telemetry.health import HealthProbe
from agent.device.telemetry.metrics import MetricsReporter, VariantSource, request_metrics
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.wire.commands import Command
from agent.wire.messages import CaptureMetrics, Heartbeat, Metrics, Register, State
from agent.wire.stamp import Stamper


class Reports:
    """Assembles and sends the device's reports through the outbox."""

    def __init__(self, *, config: AgentConfig, profile: DeviceProfile, stamper: Stamper,
                 router: VariantRouter, swaps: SwapController, outbox: Outbox, spool: Spool,
                 health: HealthProbe, started_at: float,
                 results: ResultStream | None = None,
                 capture: Callable[[], CaptureMetrics | None] | None = None) -> None:
        self.config = config
        self.profile = profile
        self.stamper = stamper
        self.router = router
        self.swaps = swaps
        self.outbox = outbox
        self.spool = spool
        self.health = health
        self.started_at = started_at
        self.results = results
        self.capture = capture  # the capture counts (None: capture is off)
        self.reporter = MetricsReporter()
        # The spool id of the last ``spool_dropped`` event while it waits to be delivered:
        # during an outage the count keeps adding up (persistently, in the spool) instead
        # of one critical event per tick, which would fill the budget in turn.
        self._dropped_event: int | None = None

    def register(self) -> None:
        """Tell the controller who this device is: on start, and on an ``announce``."""
        self.outbox.send(Register, groups=self.config.thing_groups,
                         profile=self.profile.to_dict(), agent_version=__version__,
                         boot_id=self.stamper.boot_id, models=self.router.models(),
                         backend=self.config.backend.type)

    def heartbeat(self) -> None:
        # Groups and profile ride along so that a controller that missed the register
        # knows the device within one heartbeat interval.
        self.outbox.send(Heartbeat, uptime_s=round(time.monotonic() - self.started_at, 3),
                         boot_id=self.stamper.boot_id, models=self.router.models(),
                         groups=self.config.thing_groups, profile=self.profile.to_dict(),
                         backend=self.config.backend.type)

    def metrics(self) -> None:
        """Each serving lane's metrics and the device's health; EMF documents too when
        configured; an event when the spool dropped metrics to stay within budget."""
        rollout = self.swaps.rollout
        variants = self.reporter.report([
            VariantSource(variant=lane.variant, model_version=lane.model_version,  # type: ignore[arg-type]
                          stats=lane.stats,
                          rollout_id=rollout.rollout_id if rollout else None,
                          rollout_seq=rollout.rollout_seq if rollout else None)
            for lane in self.router.lanes()])
        message = self.outbox.send(Metrics, boot_id=self.stamper.boot_id, variants=variants,
                                   health=self.health.read().to_report(),
                                   requests=request_metrics(self.router.request_stats),
                                   results=None if self.results is None
                                   else self.results.counts(),
                                   capture=None if self.capture is None else self.capture())
        if message is not None and self.config.emit_emf:
            for line in emf_lines(message):
                self.outbox.send_raw("emf", line.encode())
        if self._dropped_event_waiting():
            return
        dropped = self.spool.take_dropped_metrics()
        if dropped:
            self._dropped_event = self.outbox.event_entry(
                "spool_dropped", f"{dropped} metrics report(s) dropped to stay within the "
                "spool budget", data={"count": dropped})

    def _dropped_event_waiting(self) -> bool:
        """Whether the last ``spool_dropped`` event is still in the spool, undelivered."""
        if self._dropped_event is None:
            return False
        waiting = self.spool.peek(1, after_id=self._dropped_event - 1)
        if waiting and waiting[0].id == self._dropped_event:
            return True
        self._dropped_event = None
        return False

    def state_fields(self) -> dict[str, object]:
        """What serves, how traffic is split, the rollout and any trial under way."""
        snapshot, swaps = self.router.snapshot(), self.swaps
        blue, green = snapshot.weights
        fields: dict[str, object] = {"models": snapshot.models, "mode": snapshot.mode,
                                     "weights": {"blue": blue, "green": green}}
        if swaps.rollout is not None:
            fields["rollout_id"] = swaps.rollout.rollout_id
            fields["rollout_seq"] = swaps.rollout.rollout_seq
        if snapshot.green_trial is not None:
            fields["trial"] = snapshot.green_trial
        elif swaps.trial_started is not None:
            fields["trial"] = {"candidate": snapshot.models["blue"], "kind": "weighted",
                               "elapsed_s": round(time.monotonic() - swaps.trial_started, 3)}
        return fields

    def state(self, in_reply_to: str | None = None) -> None:
        self.outbox.send(State, in_reply_to=in_reply_to, **self.state_fields())

    def deferral(self, deployment_id: str, reason: str) -> None:
        """A Greengrass deployment held back (the update policy's ``on_deferred``)."""
        self.outbox.event("update_deferred", f"Greengrass deployment {deployment_id} "
                          f"deferred: {reason}"[:512],
                          data={"deployment_id": deployment_id[:128]})

    # ---- command handlers -------------------------------------------------------------

    def status(self, command: Command) -> Result:
        self.state(in_reply_to=command.command_id)
        return Result("ok")

    def announce(self, _command: Command) -> Result:
        self.register()
        return Result("ok", "register sent")
