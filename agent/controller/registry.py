"""The devices the controller knows, from their register and heartbeat messages,
and the groups of a fleet file (``{groups: {name: [things]}}``) merged in.

``last_seen`` is the controller's monotonic clock at the last fresh message
(the caller drops stale ones first, e.g. with ``SenderTracker``); a device's
own clock is never consulted. The hardware class (the unit canaries are
spread over and guardrails judge) is the Neo target unless ``classify`` says
otherwise.

A heartbeat carries the device's groups and profile too, so a controller that
started after its devices (and missed their register messages) knows each one
within a heartbeat interval; the newest groups a device reports, by either
message, are the ones kept.

Which of a spec's packages a device gets is its :attr:`Device.package_key`: its Neo
target, or :data:`ONNX_PACKAGE` for a device that serves with the ONNX backend (its
register or heartbeat says ``backend: onnx``; older agents say nothing and run DLR).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import yaml

from agent.controller.errors import FleetFileError
from agent.core.errors import ConfigError
from agent.wire.messages import Heartbeat, ProfileInfo, Register
from agent.wire.topics import check_name

ONNX_PACKAGE = "onnx"  # the key of a spec's ONNX package (``packages: {onnx: ...}``)


@dataclass(frozen=True, kw_only=True)
class Device:
    thing: str
    groups: frozenset[str]  # from its register message and the fleet file
    profile: ProfileInfo
    hardware_class: str
    models: Mapping[str, str]  # variant -> model version
    last_seen: float  # controller monotonic clock
    boot_id: str
    backend: str = "dlr"  # the runtime it serves with, as it last reported

    @property
    def package_key(self) -> str:
        """The key of the spec's ``packages`` this device takes: ``onnx`` for a device
        running the ONNX backend, else its Neo target."""
        return ONNX_PACKAGE if self.backend == ONNX_PACKAGE else self.profile.neo_target

    def describe_key(self) -> str:
        """The package key for messages: ``Neo target 'rasp4b'`` or ``backend onnx``."""
        return f"backend {ONNX_PACKAGE}" if self.package_key == ONNX_PACKAGE else \
            f"Neo target {self.profile.neo_target!r}"


def neo_target_class(profile: ProfileInfo) -> str:
    return profile.neo_target


def load_fleet_file(path: str | Path) -> dict[str, frozenset[str]]:
    """``{groups: {name: [things]}}`` as group -> things."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise FleetFileError(f"cannot read fleet file {path}: {err}") from err
    if not isinstance(data, dict) or set(data) != {"groups"} \
            or not isinstance(data["groups"], dict):
        raise FleetFileError(f"{path}: expected exactly {{groups: {{name: [things]}}}}")
    groups: dict[str, frozenset[str]] = {}
    for name, things in data["groups"].items():
        if not isinstance(name, str) or not isinstance(things, list) \
                or not all(isinstance(t, str) for t in things):
            raise FleetFileError(f"{path}: groups.{name} must be a list of thing names")
        try:
            groups[check_name("group", name)] = frozenset(check_name("thing", t) for t in things)
        except ConfigError as err:
            raise FleetFileError(f"{path}: groups.{name}: {err}") from err
    return groups


class FleetRegistry:
    """Devices by thing name; not thread-safe (the controller owns one per loop)."""

    def __init__(self, *, groups: Mapping[str, Iterable[str]] | None = None,
                 classify: Callable[[ProfileInfo], str] = neo_target_class,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._file_groups = {name: frozenset(things) for name, things in (groups or {}).items()}
        self._classify = classify
        self._clock = clock
        self._devices: dict[str, Device] = {}
        self._registered_groups: dict[str, frozenset[str]] = {}

    def observe(self, message: Register | Heartbeat, *, now: float | None = None) -> bool:
        """Record a fresh register or heartbeat; True if the device is known afterwards.

        A heartbeat of an unknown device registers it when it carries ``profile`` and
        ``groups``; False for one without them (an older agent: ask it to register, with
        an ``announce`` command)."""
        at = self._clock() if now is None else now
        models = MappingProxyType({str(k): v for k, v in message.models.items()})
        device = self._devices.get(message.thing)
        profile, groups = message.profile, message.groups
        if isinstance(message, Register) or device is None:
            if profile is None or groups is None:
                return False
            self._registered_groups[message.thing] = frozenset(groups)
            self._devices[message.thing] = Device(
                thing=message.thing, groups=self._groups_of(message.thing), profile=profile,
                hardware_class=self._classify(profile), models=models, last_seen=at,
                boot_id=message.boot_id, backend=message.backend or "dlr")
            return True
        if groups is not None:
            self._registered_groups[message.thing] = frozenset(groups)
            device = replace(device, groups=self._groups_of(message.thing))
        if profile is not None and profile != device.profile:
            device = replace(device, profile=profile, hardware_class=self._classify(profile))
        if message.backend is not None:
            device = replace(device, backend=message.backend)
        self._devices[message.thing] = replace(device, last_seen=at, boot_id=message.boot_id,
                                               models=models)
        return True

    def get(self, thing: str) -> Device | None:
        return self._devices.get(thing)

    def devices(self) -> list[Device]:
        return [self._devices[thing] for thing in sorted(self._devices)]

    def known_groups(self) -> frozenset[str]:
        names = set(self._file_groups)
        for groups in self._registered_groups.values():
            names |= groups
        return frozenset(names)

    def devices_in(self, groups: Iterable[str]) -> list[Device]:
        """Registered devices in any of ``groups``, sorted by thing."""
        wanted = set(groups)
        return [d for d in self.devices() if d.groups & wanted]

    def unregistered_in(self, groups: Iterable[str]) -> list[str]:
        """Things a fleet file puts in ``groups`` that never registered (no profile)."""
        things: set[str] = set()
        for group in groups:
            things |= self._file_groups.get(group, frozenset())
        return sorted(things - set(self._devices))

    def hardware_classes(self, groups: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Hardware class -> things (of ``groups``, or of every device)."""
        devices = self.devices() if groups is None else self.devices_in(groups)
        classes: dict[str, list[str]] = {}
        for device in devices:
            classes.setdefault(device.hardware_class, []).append(device.thing)
        return dict(sorted(classes.items()))

    def is_online(self, thing: str, now: float | None = None, timeout_s: float = 60.0) -> bool:
        device = self._devices.get(thing)
        if device is None:
            return False
        return (self._clock() if now is None else now) - device.last_seen <= timeout_s

    def _groups_of(self, thing: str) -> frozenset[str]:
        groups = set(self._registered_groups.get(thing, frozenset()))
        groups.update(name for name, things in self._file_groups.items() if thing in things)
        return frozenset(groups)
