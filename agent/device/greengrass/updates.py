"""Greengrass component updates: deferred while a model rollout is in progress on the device.

A deployment that replaced the agent (or its model component) in the middle of a
canary would break the rollout's guarantees, so while one is active the agent
answers each pre-update notice with DeferComponentUpdate and the nucleus asks
again after ``recheck_after_ms``; once the rollout ends the update is accepted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.device.greengrass.component import ComponentUpdateEvent, GreengrassComponent
from agent.wire.transport import TransportError

log = logging.getLogger("edge_agent.updates")


@dataclass
class UpdatePolicy:
    recheck_after_ms: int = 30_000
    _active: dict[str, str] = field(default_factory=dict)  # rollout id -> why it holds updates
    _lock: threading.Lock = field(default_factory=threading.Lock)
    deferred: list[str] = field(default_factory=list)  # deployment ids, in order
    accepted: list[str] = field(default_factory=list)
    # Called (deployment id, reason) each time a deployment is deferred, to report it.
    on_deferred: Callable[[str, str], None] | None = None

    def hold(self, rollout_id: str, reason: str = "model rollout in progress") -> None:
        with self._lock:
            self._active[rollout_id] = reason

    def release(self, rollout_id: str) -> None:
        with self._lock:
            self._active.pop(rollout_id, None)

    def holding(self) -> str | None:
        with self._lock:
            return next(iter(self._active.values()), None)

    def handler(self, component: GreengrassComponent) -> Callable[[ComponentUpdateEvent], None]:
        def on_update(event: ComponentUpdateEvent) -> None:
            if event.kind != "pre":
                return
            reason = self.holding()
            try:
                if reason is not None:
                    component.defer_component_update(event.deployment_id,
                                                     self.recheck_after_ms, reason)
                    self.deferred.append(event.deployment_id)
                    log.info("deferred deployment %s: %s", event.deployment_id, reason)
                    if self.on_deferred is not None:
                        self.on_deferred(event.deployment_id, reason)
                else:
                    component.accept_component_update(event.deployment_id)
                    self.accepted.append(event.deployment_id)
            except TransportError as err:
                log.warning("could not answer deployment %s: %s", event.deployment_id, err)

        return on_update
