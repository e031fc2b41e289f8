"""The main thread's schedule: heartbeats, metrics, the variant guardrail checks and
configuration changes, until the agent is told to stop or inference stops.
"""

from __future__ import annotations

import threading
import time

from agent.core.errors import AgentError
from agent.device.app.config_reload import ConfigReloader
from agent.device.app.inference import InferenceWorker
from agent.device.app.reports import Reports
from agent.device.app.swaps import SwapController
from agent.device.telemetry.health import HealthProbe
from agent.device.uplink.outbox import Outbox

GUARDRAIL_PERIOD_S = 0.25


class Scheduler:
    """Runs each periodic job when it is due; the intervals are the current settings'."""

    def __init__(self, *, settings: ConfigReloader, reports: Reports, swaps: SwapController,
                 health: HealthProbe, worker: InferenceWorker, outbox: Outbox,
                 stop_event: threading.Event) -> None:
        self.settings = settings
        self.reports = reports
        self.swaps = swaps
        self.health = health
        self.worker = worker
        self.outbox = outbox
        self.stop_event = stop_event

    def run(self) -> None:
        """Heartbeats and metrics on schedule until ``stop_event`` is set."""
        now = time.monotonic()
        next_metrics = now + self.settings.config.metrics_interval_seconds
        next_heartbeat = now
        next_check = now
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self.settings.take_change():
                self.settings.apply()
                config = self.settings.config
                next_metrics = min(next_metrics, now + config.metrics_interval_seconds)
                next_heartbeat = min(next_heartbeat, now + config.heartbeat_interval_seconds)
            config = self.settings.config
            if now >= next_heartbeat:
                self.reports.heartbeat()
                next_heartbeat = now + config.heartbeat_interval_seconds
            if now >= next_metrics:
                self.reports.metrics()
                next_metrics = now + config.metrics_interval_seconds
            if now >= next_check:
                self.check_variants()
                next_check = now + GUARDRAIL_PERIOD_S
            if not self.worker.is_alive() and not self.stop_event.is_set():
                self.outbox.event("agent_error", f"inference stopped: {self.worker.failure!r}")
                break
            wait = min(next_metrics, next_heartbeat, next_check) - time.monotonic()
            self.stop_event.wait(max(0.0, min(wait, 1.0)))

    def check_variants(self) -> None:
        """The swap controller's guardrail tick, with the health readings it needs."""
        limits = self.settings.config.guardrails
        rss = temp = None
        if limits.max_rss_bytes is not None or limits.max_soc_temp_c is not None:
            snapshot = self.health.read()
            rss, temp = snapshot.rss_bytes, snapshot.soc_temp_c
        try:
            self.swaps.tick(rss_bytes=rss, soc_temp_c=temp)
        except AgentError as err:
            self.outbox.event("agent_error", f"variant check failed: {err}"[:512])
