"""Rollout specs (every error names its field) and the fleet registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.controller.errors import FleetFileError, SpecError
from agent.controller.registry import FleetRegistry, load_fleet_file
from agent.controller.spec import (
    Canary,
    GuardrailSpec,
    Linear,
    effective_guardrails,
    load_spec,
    parse_spec,
)
from agent.wire.messages import Heartbeat, ProfileInfo, Register

SHA = "ab" * 32
BOOT = "c" * 32


def profile(target: str) -> ProfileInfo:
    return ProfileInfo(board="board", board_family="generic", neo_target=target, arch="x86_64",
                       reported_arch="x86_64", emulated=True, os_bits=64, cpu_count=4,
                       mem_total_bytes=2**31, mem_available_bytes=2**30)


def register(thing: str, target: str, groups: list[str], seq: int = 1) -> Register:
    return Register(thing=thing, seq=seq, sent_at=0, groups=groups, profile=profile(target),
                    agent_version="0.1.0", boot_id=BOOT, models={"blue": "digits-v1"})


def spec_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "r-digits-v2",
        "model": "digits-v2",
        "packages": {"rasp4b": {"url": "https://example.com/p.tar.gz", "sha256": SHA,
                                "version": 2},
                     "jetson_nano": {"url": "s3://bucket/j.tar.gz", "sha256": SHA,
                                     "version": 2}},
        "groups": ["kitchen", "garage"],
        "strategy": {"type": "canary", "percent": 10, "bake_s": 600, "then": "linear",
                     "linear_steps": 3, "step_interval_s": 300},
        "shadow": {"duration_s": 900, "sample_rate": 0.2},
        "weights": [10, 50, 100],
        "guardrails": {"min_samples": 500, "max_p99_ratio": 1.5, "max_error_rate": 0.01},
    }
    data.update(overrides)
    return data


def fleet() -> FleetRegistry:
    registry = FleetRegistry(groups={"garage": ["pi-9"]}, clock=lambda: 0.0)
    registry.observe(register("pi-1", "rasp4b", ["kitchen"]), now=1.0)
    registry.observe(register("jet-1", "jetson_nano", ["kitchen"]), now=1.0)
    registry.observe(register("pi-9", "rasp4b", []), now=1.0)
    return registry


def test_valid_spec_loads_from_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec_data()))
    (tmp_path / "r.json").write_text(json.dumps(spec_data()))
    for name in ("r.yaml", "r.json"):
        spec = load_spec(tmp_path / name)
        assert isinstance(spec.strategy, Canary)
        assert spec.strategy.linear_steps == 3
        assert spec.guardrails.min_devices == 1
        assert spec.timing.step_timeout_s == 600 and spec.timing.stale_after_s == 60
    spec.validate_against(fleet())


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"strategy": {"type": "linear", "steps": 0, "step_interval_s": 60}},
     "strategy.steps", "must be >= 1"),
    ({"weights": [10, 150, 100]}, "weights[1]", "must be <= 100"),
    ({"weights": [-5, 100]}, "weights[0]", "must be >= 0"),
    ({"weights": [50, 20, 100]}, "weights[1]", "above the previous"),
    ({"weights": [10, 50]}, "weights[1]", "last weight must be 100"),
    ({"guardrails": {"max_error_rate": 1.5}}, "guardrails.max_error_rate", "must be <= 1"),
    ({"guardrails": {"max_p99_ratio": 0}}, "guardrails.max_p99_ratio", "must be > 0"),
    ({"guardrails": {"min_samples": 0}}, "guardrails.min_samples", "must be >= 1"),
    ({"guardrails": {"min_samples": None}}, "guardrails.min_samples", "cannot be off"),
    ({"guardrails": {"min_devices": "off"}}, "guardrails.min_devices", "cannot be off"),
    ({"guardrails": {"max_p99_ratio": True}}, "guardrails.max_p99_ratio", "a number, null or off"),
    ({"guardrails": {"max_p99": 5}}, "guardrails.max_p99", "not a known field"),
    ({"guardrails": "off"}, "guardrails", "cannot be off as a whole"),
    ({"strategy": {"type": "canary", "bake_s": 60}}, "strategy.percent", "exactly one"),
    ({"strategy": {"type": "canary", "group": "lab", "bake_s": 60}}, "strategy.group",
     "must be one of groups"),
    ({"strategy": {"type": "canary", "percent": 0, "bake_s": 60}}, "strategy.percent",
     "must be > 0"),
    ({"strategy": {"type": "canary", "percent": 5, "bake_s": 60, "then": "linear"}},
     "strategy.linear_steps", "required"),
    ({"shadow": {"duration_s": 10, "sample_rate": 1.5}}, "shadow.sample_rate", "<= 1"),
    ({"colour": "blue"}, "colour", "not a known field"),
    ({"groups": ["a", "a"]}, "groups[1]", "twice"),
])
def test_bad_spec_names_the_field(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_data(**overrides))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)


def test_partial_guardrails_keep_the_other_defaults() -> None:
    spec = parse_spec(spec_data(guardrails={"min_samples": 50}))
    g = spec.guardrails
    assert g.min_samples == 50
    assert (g.min_devices, g.max_p99_ratio, g.min_p99_excess_us, g.max_error_rate,
            g.min_agreement, g.install_failure_pct, g.install_failure_min_devices) == (
        1, 2.0, 500.0, 0.01, 0.9, 20.0, 1)
    assert (g.max_p99_us, g.max_soc_temp_c, g.max_rss_bytes) == (None, None, None)
    assert effective_guardrails(g) == [
        "min_samples: 50 (spec)",
        "min_devices: 1 (default)",
        "max_p99_us: not set",
        "max_p99_ratio: 2.0 (default)",
        "min_p99_excess_us: 500.0 (default)",
        "max_error_rate: 0.01 (default)",
        "min_agreement: 0.9 (default)",
        "max_soc_temp_c: not set",
        "max_rss_bytes: not set",
        "install_failure_pct: 20.0 (default)",
        "install_failure_min_devices: 1 (default)",
        "breach_quorum: 2 (default)",
        "agreement_with: blue (default)",
        "min_accuracy_gain: not set",
    ]


@pytest.mark.parametrize("block", ["missing", None, {}])
def test_guardrails_block_is_optional(block: object) -> None:
    """Left out, or ``guardrails:`` with nothing under it (YAML null): every default."""
    data = spec_data(guardrails=block)
    if block == "missing":
        del data["guardrails"]
    g = parse_spec(data).guardrails
    assert g == GuardrailSpec() and not g.model_fields_set
    assert all(line.endswith(("(default)", "not set")) for line in effective_guardrails(g))


def test_null_and_off_disable_a_limit(tmp_path: Path) -> None:
    # a bare `off` is False to YAML 1.1: it must disable, never mean a limit of 0
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump({k: v for k, v in spec_data().items() if k != "guardrails"})
        + "guardrails:\n  min_agreement: off\n  max_error_rate: ~\n"
          "  install_failure_pct: 'OFF'\n  max_rss_bytes: null\n  max_p99_us: 20000\n")
    g = load_spec(tmp_path / "r.yaml").guardrails
    assert (g.min_agreement, g.max_error_rate, g.install_failure_pct, g.max_rss_bytes) == (
        None, None, None, None)
    lines = effective_guardrails(g)
    for name in ("min_agreement", "max_error_rate", "install_failure_pct", "max_rss_bytes"):
        assert f"{name}: off (disabled in the spec)" in lines
    assert "max_p99_us: 20000.0 (spec)" in lines
    assert "max_p99_ratio: 2.0 (default)" in lines
    assert "max_soc_temp_c: not set" in lines


@pytest.mark.parametrize("guardrails", [
    {"min_samples": 50},
    {"min_agreement": "off", "max_error_rate": None, "max_p99_us": 15000, "max_rss_bytes": 10**9},
    None,
])
def test_stored_spec_round_trips(guardrails: dict[str, Any] | None) -> None:
    spec = parse_spec(spec_data(guardrails=guardrails))
    stored = json.loads(spec.model_dump_json())
    assert stored["guardrails"]["min_agreement"] == (None if guardrails and "min_agreement"
                                                      in guardrails else 0.9)
    assert parse_spec(stored) == spec
    # Stored, every limit is explicit (a resumed rollout keeps the limits it started with),
    # so a limit that was not set reads back as disabled.
    again = parse_spec(stored).guardrails
    assert again.model_fields_set == set(GuardrailSpec.model_fields)
    assert all(line.endswith(("(spec)", "(disabled in the spec)"))
               for line in effective_guardrails(again))


def test_unknown_group_names_its_index() -> None:
    spec = parse_spec(spec_data(groups=["kitchen", "attic"]))
    with pytest.raises(SpecError, match=r"^groups\[1\]: unknown group 'attic'"):
        spec.validate_against(fleet())


def test_present_target_without_package_names_packages() -> None:
    data = spec_data()
    del data["packages"]["jetson_nano"]
    spec = parse_spec(data)
    with pytest.raises(SpecError, match=r"^packages: no package for Neo target 'jetson_nano'"):
        spec.validate_against(fleet())
    # a target only outside the targeted groups needs no package
    parse_spec(spec_data(groups=["garage"], strategy={
        "type": "linear", "steps": 2, "step_interval_s": 5}, packages={
        "rasp4b": data["packages"]["rasp4b"]})).validate_against(fleet())


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="not valid json"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError):
        load_spec(tmp_path / "list.yaml")


def test_linear_spec() -> None:
    spec = parse_spec(spec_data(strategy={"type": "linear", "steps": 4, "step_interval_s": 30},
                                shadow=None, weights=None))
    assert isinstance(spec.strategy, Linear) and spec.strategy.steps == 4


# ---- registry ---------------------------------------------------------------------------


def test_registry_merges_fleet_file_groups_and_tracks_presence(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"groups": {"garage": ["pi-9", "pi-ghost"],
                                               "kitchen": ["pi-1"]}}))
    registry = FleetRegistry(groups=load_fleet_file(path), clock=lambda: 0.0)
    assert registry.observe(register("pi-9", "rasp4b", ["lab"]), now=10.0)
    assert registry.observe(register("jet-1", "jetson_nano", ["kitchen"]), now=10.0)
    assert not registry.observe(Heartbeat(thing="nobody", seq=2, sent_at=0, uptime_s=1.0,
                                          boot_id=BOOT, models={}), now=11.0)
    device = registry.get("pi-9")
    assert device is not None
    assert device.groups == {"garage", "lab"} and device.hardware_class == "rasp4b"
    assert [d.thing for d in registry.devices_in(["garage", "kitchen"])] == ["jet-1", "pi-9"]
    assert registry.unregistered_in(["garage", "kitchen"]) == ["pi-1", "pi-ghost"]
    assert registry.hardware_classes() == {"jetson_nano": ["jet-1"], "rasp4b": ["pi-9"]}
    assert registry.known_groups() == {"garage", "kitchen", "lab"}

    assert registry.observe(Heartbeat(thing="pi-9", seq=3, sent_at=0, uptime_s=50.0,
                                      boot_id=BOOT, models={"blue": "digits-v1"}), now=70.0)
    assert registry.is_online("pi-9", 100.0, 60.0)
    assert not registry.is_online("jet-1", 100.0, 60.0)
    assert not registry.is_online("nobody", 100.0, 60.0)


def test_registry_custom_hardware_class() -> None:
    registry = FleetRegistry(classify=lambda p: f"{p.neo_target}-{p.os_bits}")
    registry.observe(register("pi-1", "rasp4b", ["g"]), now=0.0)
    assert registry.hardware_classes() == {"rasp4b-64": ["pi-1"]}


def test_bad_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"groups": {"g": "pi-1"}}))
    with pytest.raises(FleetFileError, match=r"groups\.g"):
        load_fleet_file(path)
    path.write_text(yaml.safe_dump({"groups": {"g": ["bad name"]}}))
    with pytest.raises(FleetFileError):
        load_fleet_file(path)
    path.write_text(yaml.safe_dump({"devices": []}))
    with pytest.raises(FleetFileError):
        load_fleet_file(path)
