"""The long-running agent: one process, several threads, nothing on the inference path
that waits for the network.

    inference thread   InferenceLoop.run (paced or source-driven); it also answers
                       the local API's requests (with source api, their own threads do)
    API threads        HTTP (Open Inference Protocol) and native-socket connections
    main thread        schedule: heartbeat, metrics, dropped-metrics events (Scheduler)
    commands thread    gate -> handler -> ack (CommandProcessor)
    drainer thread     spool -> transport, confirmed deliveries only (SpoolDrainer)
    transport threads  awscrt / Greengrass IPC callbacks, which only enqueue

Under a Greengrass nucleus the transport is IPC, and the service is also given the
component (:class:`GreengrassComponent`): its configuration changes apply live, it
reports RUNNING, and component updates wait while a rollout is in progress. Otherwise
the transport is direct MQTT, or none at all (offline: everything waits in the spool).
The parts are built by :func:`agent.device.app.parts.build_parts`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from agent.device.app.commands import CommandProcessor
from agent.device.app.config import AgentConfig
from agent.device.app.parts import AgentParts, build_parts
from agent.device.app.startup import report_start
from agent.device.app.state_dir import wait_until_writable
from agent.device.app.swaps import SwapController
from agent.device.greengrass.component import GreengrassComponent
from agent.device.greengrass.updates import UpdatePolicy
from agent.device.inference.router import VariantRouter
from agent.device.platform.profile import DeviceProfile
from agent.device.store.store import ModelStore
from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.spool import Spool
from agent.wire.transport import Transport, TransportError

log = logging.getLogger("edge_agent")


class AgentService:
    """Builds the agent's parts and starts them on ``start``; ``run`` until stopped."""

    def __init__(self, *, config: AgentConfig, transport: Transport | None = None,
                 greengrass: GreengrassComponent | None = None) -> None:
        self._config = config
        self.transport = transport
        self.greengrass = greengrass  # None when no Greengrass nucleus started this process
        self.stop_event = threading.Event()
        self._started_at = time.monotonic()
        self.updates = UpdatePolicy()
        self.parts: AgentParts | None = None  # once start has built them
        self.drainer: SpoolDrainer | None = None

    # ---- start ----------------------------------------------------------------------

    def start(self) -> None:
        config = self._config
        sys.setswitchinterval(config.gil_switch_interval_seconds)
        if not wait_until_writable(config.state_dir, self.stop_event):
            return  # stopped while the state directory was read-only: nothing was built
        parts = self.parts = build_parts(config, greengrass=self.greengrass,
                                         updates=self.updates, stop_event=self.stop_event,
                                         started_at=self._started_at)
        self.updates.on_deferred = parts.reports.deferral
        serving = parts.router.models()["blue"]
        report_start(parts.outbox, config=config, store=parts.store, profile=parts.profile,
                     recovery=parts.recovery, serving=serving)
        if parts.results is not None:
            parts.results.start()
        if parts.capture is not None:
            parts.capture.start()
        parts.worker.start()
        parts.commands.start()
        parts.reports.register()
        parts.api.start(on_failure=lambda message: parts.outbox.event("server_unavailable",
                                                                         message))
        if self.transport is not None:
            if parts.capture is not None:
                parts.capture.online.check = self.transport.is_connected
            self._connect(parts, self.transport)
        if self.greengrass is not None:
            parts.settings.watch()
            self.greengrass.subscribe_to_component_updates(self.updates.handler(self.greengrass))
            self.greengrass.update_state("RUNNING")
        log.info("agent %s started: %s, model %s, transport %s", config.thing_name,
                 parts.profile, serving, self.transport.name if self.transport else
                 "none (offline)")

    def _connect(self, parts: AgentParts, transport: Transport) -> None:
        try:
            transport.connect(timeout_s=10.0)
        except TransportError as err:
            # Not fatal: the drainer keeps retrying and the spool keeps everything meanwhile.
            log.warning("transport %s not connected yet: %s", transport.name, err)
        for topic in (parts.topics.commands,
                      *(parts.topics.group_commands(g) for g in self._config.thing_groups)):
            try:
                transport.subscribe(topic, parts.commands.on_message)
            except TransportError as err:
                log.warning("cannot subscribe to %s yet: %s", topic, err)
        self.drainer = SpoolDrainer(spool=parts.spool, transport=transport,
                                    rate_limit_per_s=self._config.drain_rate_per_second)
        self.drainer.start()

    # ---- run ------------------------------------------------------------------------

    def run(self) -> None:
        """Heartbeats and metrics on schedule until ``stop_event`` is set."""
        if self.parts is None and self.stop_event.is_set():
            return  # stopped before it started
        self._parts().scheduler.run()

    def register(self) -> None:
        """Tell the controller who this device is: on start, and on an ``announce``."""
        self._parts().reports.register()

    def heartbeat(self) -> None:
        self._parts().reports.heartbeat()

    def report_metrics(self) -> None:
        self._parts().reports.metrics()

    # ---- views ----------------------------------------------------------------------

    @property
    def config(self) -> AgentConfig:
        """The settings as they stand (reporting intervals follow Greengrass live)."""
        return self._config if self.parts is None else self.parts.settings.config

    @property
    def profile(self) -> DeviceProfile:
        return self._parts().profile

    @property
    def store(self) -> ModelStore:
        return self._parts().store

    @property
    def router(self) -> VariantRouter:
        return self._parts().router

    @property
    def swaps(self) -> SwapController:
        return self._parts().swaps

    @property
    def commands(self) -> CommandProcessor:
        return self._parts().commands

    @property
    def spool(self) -> Spool:
        return self._parts().spool

    def _parts(self) -> AgentParts:
        if self.parts is None:
            raise AttributeError("the agent has not been started")
        return self.parts

    # ---- stop -----------------------------------------------------------------------

    def shutdown(self) -> int:
        """Stop serving, report the final state and flush within the configured time.

        Returns how many messages are still in the spool (they go out on next start).
        """
        parts = self._parts()
        self.stop_event.set()
        parts.api.stop()
        parts.worker.stop()
        if parts.results is not None:
            parts.results.stop()
        parts.commands.stop()
        if parts.capture is not None:
            parts.capture.stop()  # after the inference thread: nothing offers any more
        parts.reports.state()
        remaining = parts.spool.count()
        if self.drainer is not None:
            remaining = self.drainer.flush(self.config.shutdown_flush_seconds)
            self.drainer.stop()
        if self.transport is not None:
            self.transport.close()
        parts.worker.loop.close()
        parts.spool.close()
        parts.store.close()
        return remaining
