"""This process as a Greengrass component: its configuration, its lifecycle state, and the
nucleus's notices of component updates, over the process's IPC connection.

Built over the same :class:`IpcConnection` as the IPC transport, so one connection carries
both; its streams (configuration changes, update notices) are opened again after every
reconnect, as the transport's subscriptions are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.device.uplink.ipc import IpcConnection, guarded


@dataclass(frozen=True)
class ComponentUpdateEvent:
    """A deployment is about to update components (``pre``) or has done so (``post``)."""

    kind: Literal["pre", "post"]
    deployment_id: str
    is_ggc_restarting: bool = False


ConfigCallback = Callable[[tuple[str, ...]], None]  # key path of the changed configuration
UpdateCallback = Callable[[ComponentUpdateEvent], None]


class GreengrassComponent:
    """The Greengrass operations the agent needs; each failure is a TransportError."""

    def __init__(self, connection: IpcConnection) -> None:
        self.connection = connection

    def get_configuration(self, key_path: Sequence[str] = (), *,
                          component: str | None = None) -> dict[str, Any]:
        """The configuration at ``key_path`` (all of it by default) of this component, or
        of ``component``. As on a real nucleus, a single value comes back as
        ``{last_key: value}``."""
        response = self.connection.call(f"get configuration {list(key_path)}", lambda c: (
            c.get_configuration_async(component_name=component, key_path=list(key_path))))
        value = response.value
        return dict(value) if isinstance(value, dict) else {}

    def subscribe_to_configuration_update(self, callback: ConfigCallback,
                                          key_path: Sequence[str] = ()) -> None:
        @guarded("configuration update callback")
        def deliver(event: Any) -> None:
            changed = event.configuration_update_event
            if changed is not None:
                callback(tuple(changed.key_path or ()))

        self.connection.add_stream("subscribe to configuration updates", lambda c: (
            c.subscribe_to_configuration_update_async(key_path=list(key_path),
                                                      on_stream_event=deliver)))

    def update_state(self, state: Literal["RUNNING", "ERRORED"]) -> None:
        self.connection.call(f"report state {state}",
                             lambda c: c.update_state_async(state=state))

    def subscribe_to_component_updates(self, callback: UpdateCallback) -> None:
        @guarded("component update callback")
        def deliver(event: Any) -> None:
            if event.pre_update_event is not None:
                pre = event.pre_update_event
                callback(ComponentUpdateEvent("pre", pre.deployment_id,
                                              bool(pre.is_ggc_restarting)))
            if event.post_update_event is not None:
                callback(ComponentUpdateEvent("post", event.post_update_event.deployment_id))

        self.connection.add_stream("subscribe to component updates", lambda c: (
            c.subscribe_to_component_updates_async(on_stream_event=deliver)))

    def defer_component_update(self, deployment_id: str, recheck_after_ms: int,
                               message: str | None = None) -> None:
        """Ask the nucleus to hold the update and ask again after ``recheck_after_ms``."""
        self.connection.call(
            f"defer update {deployment_id}", lambda c: c.defer_component_update_async(
                deployment_id=deployment_id, recheck_after_ms=recheck_after_ms,
                message=message))

    def accept_component_update(self, deployment_id: str, message: str | None = None) -> None:
        self.defer_component_update(deployment_id, 0, message)
