"""The controller's registry learns devices from heartbeats too: a controller started after
its devices knows each one within a heartbeat interval, without waiting for a register."""

from __future__ import annotations

from agent.controller.registry import FleetRegistry
from agent.wire.messages import Heartbeat, ProfileInfo, Register

BOOT = "0f6c2b7e4d5a4c1b9e8f7a6b5c4d3e2f"


def profile(neo_target: str = "rasp4b", available: int = 3 * 2**30) -> ProfileInfo:
    return ProfileInfo(board="Raspberry Pi 4", board_family="raspberry_pi",
                       neo_target=neo_target, arch="aarch64", reported_arch="aarch64",
                       emulated=False, os_bits=64, cpu_count=4, mem_total_bytes=4 * 2**30,
                       mem_available_bytes=available)


def heartbeat(thing: str, *, groups: list[str] | None = None,
              info: ProfileInfo | None = None, seq: int = 2) -> Heartbeat:
    return Heartbeat(thing=thing, seq=seq, sent_at=0, uptime_s=5.0, boot_id=BOOT,
                     models={"blue": "digits-v1"}, groups=groups, profile=info)


def test_a_heartbeat_with_profile_and_groups_registers_an_unknown_device() -> None:
    registry = FleetRegistry(groups={"garage": ["pi-1"]})
    assert registry.observe(heartbeat("pi-1", groups=["canary"], info=profile()), now=5.0)
    device = registry.get("pi-1")
    assert device is not None
    assert device.groups == {"canary", "garage"} and device.hardware_class == "rasp4b"
    assert device.models == {"blue": "digits-v1"} and device.last_seen == 5.0
    assert registry.unregistered_in(["garage"]) == []
    assert [d.thing for d in registry.devices_in(["canary"])] == ["pi-1"]


def test_a_heartbeat_without_them_does_not_register() -> None:
    registry = FleetRegistry()
    assert not registry.observe(heartbeat("pi-1"), now=1.0)
    assert not registry.observe(heartbeat("pi-1", groups=["canary"]), now=1.0)
    assert not registry.observe(heartbeat("pi-1", info=profile()), now=1.0)
    assert registry.devices() == []


def test_heartbeat_groups_refresh_a_known_device() -> None:
    registry = FleetRegistry(groups={"garage": ["pi-1"]})
    registry.observe(Register(thing="pi-1", seq=1, sent_at=0, groups=["canary"],
                              profile=profile(), agent_version="0.1.0", boot_id=BOOT,
                              models={"blue": "digits-v1"}), now=0.0)
    assert registry.observe(heartbeat("pi-1", groups=["fleet"], info=profile(available=1)),
                            now=30.0)
    device = registry.get("pi-1")
    assert device is not None
    assert device.groups == {"fleet", "garage"}, "the fleet file's groups stay"
    assert device.profile.mem_available_bytes == 1
    assert registry.known_groups() == {"fleet", "garage"}
    # An older agent's heartbeat (no groups) keeps what the device registered.
    assert registry.observe(heartbeat("pi-1", seq=3), now=60.0)
    device = registry.get("pi-1")
    assert device is not None and device.groups == {"fleet", "garage"}
    assert device.last_seen == 60.0
