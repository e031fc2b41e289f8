"""The agent's settings as they stand, following the component's Greengrass configuration.

The nucleus tells of a change on its own thread; that only raises a flag. The scheduler
applies it on the main thread: the reporting intervals change live, everything else
needs a restart (the recipe's run step does that). A configuration that does not
validate is reported and ignored.
"""

from __future__ import annotations

import logging
import threading

from agent.core.errors import ConfigError
from agent.device.app.config import AgentConfig
from agent.device.greengrass.component import GreengrassComponent
from agent.device.uplink.outbox import Outbox
from agent.wire.transport import TransportError

log = logging.getLogger("edge_agent")


class ConfigReloader:
    """Holds the current settings; ``config`` changes only in :meth:`apply`."""

    def __init__(self, *, config: AgentConfig, greengrass: GreengrassComponent | None,
                 outbox: Outbox) -> None:
        self.config = config
        self.greengrass = greengrass
        self.outbox = outbox
        self._changed = threading.Event()

    def watch(self) -> None:
        """Follow the component's configuration (nothing to follow outside Greengrass)."""
        if self.greengrass is not None:
            self.greengrass.subscribe_to_configuration_update(lambda _path: self._changed.set())

    def take_change(self) -> bool:
        """True once for each time the configuration was reported changed."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True

    def apply(self) -> None:
        """Read the component's configuration and take its new intervals."""
        if self.greengrass is None:
            return
        try:
            new = self.config.merged(self.greengrass.get_configuration())
        except (TransportError, ConfigError) as err:
            self.outbox.event("agent_error", f"configuration update ignored: {err}"[:512])
            return
        # Intervals apply live; the rest needs a restart (the recipe's run step does that).
        self.config = self.config.model_copy(update={
            "metrics_interval_seconds": new.metrics_interval_seconds,
            "heartbeat_interval_seconds": new.heartbeat_interval_seconds})
        log.info("configuration updated: metrics every %ss, heartbeat every %ss",
                 new.metrics_interval_seconds, new.heartbeat_interval_seconds)
