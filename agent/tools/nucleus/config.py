"""Component configuration: GetConfiguration, SubscribeToConfigurationUpdate and
UpdateConfiguration over one tree per component.

Like a real nucleus, an update event names the key path of each changed leaf, relative
to the component's ``configuration`` namespace, and a subscription sees changes at or
below the key path it subscribed to.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.tools.nucleus.errors import invalid_arguments, resource_not_found
from agent.tools.nucleus.operations import Body, Operation, Stream

KeyPath = tuple[str, ...]
Watcher = Callable[[str, KeyPath], None]  # (component, changed key path)
_NOT_FOUND = "Key not found"
_OP = "aws.greengrass#"


def merge(target: dict[str, Any], changes: Mapping[str, Any], prefix: KeyPath,
          changed: list[KeyPath]) -> None:
    """Merge ``changes`` into ``target`` in place, listing the leaves that changed."""
    for key, new in changes.items():
        path = (*prefix, key)
        old = target.get(key)
        if isinstance(new, Mapping) and new:
            if not isinstance(old, dict):
                if key in target:
                    changed.append(path)  # a leaf became a container
                old = target[key] = {}
            merge(old, new, path, changed)
        elif key not in target or old != new:
            target[key] = copy.deepcopy(new) if isinstance(new, (dict, list)) else new
            changed.append(path)


class ConfigStore:
    """Every component's configuration. Loop thread only."""

    def __init__(self, configurations: Mapping[str, dict[str, Any]]) -> None:
        self._trees = {name: copy.deepcopy(tree) for name, tree in configurations.items()}
        self._watchers: list[tuple[str, KeyPath, Watcher]] = []
        self.version = 0  # bumped on every update, so derived state (policies) can be cached

    def get(self, component: str, key_path: Sequence[str] = ()) -> Any:
        """The value at ``key_path``; raises ``ResourceNotFoundError`` as a nucleus does."""
        node: Any = self._trees.get(component)
        if node is None:
            raise resource_not_found(_NOT_FOUND)
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise resource_not_found(_NOT_FOUND)
            node = node[key]
        return copy.deepcopy(node)

    def update(self, component: str, changes: Mapping[str, Any],
               key_path: Sequence[str] = ()) -> list[KeyPath]:
        tree = self._trees.setdefault(component, {})
        node = tree
        for key in key_path:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        changed: list[KeyPath] = []
        merge(node, changes, tuple(key_path), changed)
        self.version += 1
        for path in changed:
            for name, watched, watcher in list(self._watchers):
                if name == component and (path[:len(watched)] == watched
                                          or watched[:len(path)] == path):
                    watcher(component, path)
        return changed

    def watch(self, component: str, key_path: KeyPath, watcher: Watcher) -> Callable[[], None]:
        entry = (component, key_path, watcher)
        self._watchers.append(entry)
        return lambda: self._watchers.remove(entry) if entry in self._watchers else None


def config_operations(store: ConfigStore) -> list[Operation]:
    async def get_configuration(stream: Stream, request: Body) -> Body:
        name = request.get("componentName") or stream.component
        key_path = list(request.get("keyPath") or [])
        value = store.get(name, key_path)
        if key_path and not isinstance(value, dict):
            value = {key_path[-1]: value}  # a leaf comes back keyed by its own name
        return {"componentName": name, "value": value}

    async def subscribe(stream: Stream, request: Body) -> Body:
        name = request.get("componentName") or stream.component
        key_path = tuple(request.get("keyPath") or ())
        store.get(name, key_path)  # ResourceNotFoundError when the key does not exist

        def on_change(component: str, path: KeyPath) -> None:
            stream.send_event(f"{_OP}ConfigurationUpdateEvents", {
                "configurationUpdateEvent": {"componentName": component, "keyPath": list(path)}})

        stream.after_response(lambda: stream.on_close(store.watch(name, key_path, on_change)))
        return {}

    async def update_configuration(stream: Stream, request: Body) -> Body:
        key_path = list(request.get("keyPath") or [])
        value = request.get("valueToMerge")
        if request.get("timestamp") is None:
            raise invalid_arguments("Timestamp is required")
        if value is None:
            raise invalid_arguments("ValueToMerge is required")
        if (key_path[:1] == ["accessControl"]
                or (not key_path and isinstance(value, dict) and "accessControl" in value)):
            raise invalid_arguments("Config update is not allowed for following fields "
                                    "[accessControl]")
        if not isinstance(value, dict):
            if not key_path:
                raise invalid_arguments("valueToMerge must be a mapping at the root")
            key_path, value = key_path[:-1], {key_path[-1]: value}
        store.update(stream.component, value, key_path)
        return {}

    return [Operation(f"{_OP}GetConfiguration", get_configuration),
            Operation(f"{_OP}SubscribeToConfigurationUpdate", subscribe, streaming=True),
            Operation(f"{_OP}UpdateConfiguration", update_configuration)]
