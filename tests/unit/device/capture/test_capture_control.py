"""The rules in force and the ``capture`` command: applied (store limits, a new tap on the
router), kept across a restart, reset by a configuration change; refused with an event
over the device's caps, on a device whose configuration has capture off, and for rules
that do not validate; a hostile ``rules.json`` never stops the agent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st

from agent.device.capture.config import CaptureConfig, CaptureRules
from agent.device.capture.control import RULES_FILE, CaptureControl, config_digest, refuse_all
from agent.device.capture.errors import CaptureRulesError
from agent.device.capture.tap import CaptureTap
from agent.device.inference.capture_hooks import CaptureHooks
from agent.wire.commands import CaptureArgs, CaptureCommand, CaptureRuleArgs, StatusCommand

MIB = 1024 * 1024


class Store:
    def __init__(self) -> None:
        self.limits: list[tuple[int, int]] = []

    def set_limits(self, *, budget_bytes: int, max_per_hour: int) -> None:
        self.limits.append((budget_bytes, max_per_hour))


class Router:
    def __init__(self) -> None:
        self.hooks: list[CaptureHooks | None] = []

    def set_capture(self, hooks: CaptureHooks | None) -> None:
        self.hooks.append(hooks)


class Outbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event(self, kind: str, detail: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "detail": detail, **fields})


def _tap(rules: CaptureRules, max_per_hour: int) -> CaptureTap:
    buffer = np.zeros((1, 4), np.float32)
    return CaptureTap(rules, thing="dev-1", model="toy", inputs=[("x", buffer)],
                      output_names=["scores"], source_name="testset",
                      frame_info=lambda: (1, time.time()), roles=dict, offer=lambda _c: True,
                      max_per_hour=max_per_hour)


def _config(**config: Any) -> CaptureConfig:
    return CaptureConfig.model_validate(
        {"enabled": True, "maxBudgetBytes": 8 * MIB, "budgetBytes": 4 * MIB,
         "maxPerHour": 100, "maxPerHourLimit": 1000, **config})


def _control(tmp_path: Path, **config: Any) -> tuple[CaptureControl, Store, Router, Outbox]:
    store, router, outbox = Store(), Router(), Outbox()
    control = CaptureControl(config=_config(**config),
        state_path=tmp_path / "capture", build_tap=_tap, router=router,  # type: ignore[arg-type]
        store=store, outbox=outbox)  # type: ignore[arg-type]
    return control, store, router, outbox


def _command(**args: Any) -> CaptureCommand:
    return CaptureCommand(target={"kind": "thing", "name": "dev-1"}, rollout_id="r1",
                          rollout_seq=1, issued_at=1, args=CaptureArgs(**args))


def test_the_configuration_rules_apply_at_start(tmp_path: Path) -> None:
    control, store, router, _ = _control(tmp_path, rules={"sampleRate": 0.25})
    control.start()
    assert store.limits == [(4 * MIB, 100)]
    assert control.tap is not None and control.tap.rules.sample_rate == 0.25
    assert router.hooks[-1] is not None and router.hooks[-1].served is not None
    assert control.counts()["rules_from"] == "configuration"
    assert not (tmp_path / "capture" / RULES_FILE).exists()


def test_a_command_applies_persists_and_survives_a_restart(tmp_path: Path) -> None:
    control, store, router, _ = _control(tmp_path)
    control.start()
    command = _command(enabled=True, rules=CaptureRuleArgs(sample_rate=0.5, seed=9,
                                                           low_confidence=0.6),
                       budget_bytes=6 * MIB, max_per_hour=500)
    result = control.handle(command)
    assert result.outcome == "ok", result.reason
    assert store.limits[-1] == (6 * MIB, 500)
    assert control.tap is not None and control.tap.rules.low_confidence == 0.6
    assert router.hooks[-1] is not None and router.hooks[-1].first == 1
    saved = json.loads((tmp_path / "capture" / RULES_FILE).read_text())
    assert saved["command_id"] == command.command_id and saved["rules"]["seed"] == 9

    again, store2, router2, _ = _control(tmp_path)
    again.start()
    assert again.in_force.source == "command" and again.in_force.command_id == \
        command.command_id
    assert store2.limits == [(6 * MIB, 500)] and again.tap is not None
    assert again.tap.rules.sample_rate == 0.5

    stop = again.handle(_command(enabled=False))
    assert stop.outcome == "ok" and router2.hooks[-1] is None and again.tap is None


def test_a_configuration_change_puts_its_rules_back(tmp_path: Path) -> None:
    control, _, _, _ = _control(tmp_path)
    assert control.handle(_command(enabled=False)).outcome == "ok"
    changed, _, router, _ = _control(tmp_path, rules={"sampleRate": 0.01})
    changed.start()
    assert changed.in_force.source == "configuration" and changed.in_force.enabled
    assert router.hooks[-1] is not None
    assert not (tmp_path / "capture" / RULES_FILE).exists()


@pytest.mark.parametrize(("args", "config", "reason"), [
    ({"enabled": True, "budget_bytes": 9 * MIB}, {}, "over this device's maxBudgetBytes"),
    ({"enabled": True, "max_per_hour": 1001}, {}, "over this device's maxPerHourLimit"),
    ({"enabled": True, "budget_bytes": 1000}, {}, "under the least budget"),
    ({"enabled": True}, {"enabled": False}, "capture is not enabled"),
    ({"enabled": False}, {"enabled": False}, "capture is not enabled"),
])
def test_refused_commands_leave_the_rules_unchanged(
        tmp_path: Path, args: dict[str, Any], config: dict[str, Any], reason: str) -> None:
    control, store, router, outbox = _control(tmp_path, **config)
    before = control.in_force
    command = _command(**args)
    result = control.handle(command)
    assert result.outcome == "rejected" and reason in result.reason
    assert result.data == {"code": "capture_rules_refused"}
    (event,) = outbox.events
    assert event["kind"] == "capture_rules_rejected" and reason in event["detail"]
    assert event["related_id"] == command.command_id
    assert event["data"]["code"] == "capture_rules_refused"
    assert control.in_force is before and store.limits == [] and router.hooks == []
    assert not (tmp_path / "capture" / RULES_FILE).exists()


def test_rules_that_do_not_validate_are_refused(tmp_path: Path) -> None:
    control, _, _, _ = _control(tmp_path)
    with pytest.raises(CaptureRulesError, match="sample_rate"):
        control._check(True, {"sample_rate": 2.0}, None, None, command_id="c")
    with pytest.raises(CaptureRulesError, match="sample: Extra inputs"):
        control._check(True, {"sample": 0.1}, None, None, command_id="c")


def test_other_actions_and_a_device_without_capture(tmp_path: Path) -> None:
    control, _, _, _ = _control(tmp_path)
    status = StatusCommand(target={"kind": "thing", "name": "dev-1"}, rollout_id="r1",
                           rollout_seq=1, issued_at=1)
    assert control.handle(status).outcome == "rejected"
    outbox = Outbox()
    result = refuse_all(outbox)(_command(enabled=True))  # type: ignore[arg-type]
    assert result.outcome == "rejected" and "not enabled" in result.reason
    assert outbox.events[0]["kind"] == "capture_rules_rejected"


_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = _scalar | st.lists(_scalar, max_size=3) | st.dictionaries(st.text(max_size=8), _scalar,
                                                                 max_size=3)
_saved = st.fixed_dictionaries({}, optional={
    "enabled": _json, "rules": _json | st.fixed_dictionaries({}, optional={
        "sample_rate": _json, "seed": _json, "low_confidence": _json}),
    "budget_bytes": _json, "max_per_hour": _json, "command_id": _json,
    "config_digest": _json})


def _hostile_rules_file(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "capture").mkdir(exist_ok=True)
    (tmp_path / "capture" / RULES_FILE).write_bytes(raw)
    again, store, _, _ = _control(tmp_path)
    again.start()  # never raises: the file's rules, checked, or the configuration's
    budget, per_hour = store.limits[-1]
    assert budget <= 8 * MIB and per_hour <= 1000
    assert again.in_force.source in ("configuration", "command")


DIGEST = config_digest(_config())
_files = st.binary(max_size=256) | _saved.map(
    lambda saved: json.dumps({**saved, "config_digest": DIGEST}).encode())


@BRIEF
@given(raw=_files)
def test_fuzz_a_hostile_rules_file_never_stops_the_agent(tmp_path: Path, raw: bytes) -> None:
    _hostile_rules_file(tmp_path, raw)


@pytest.mark.slow
@LONG
@given(raw=_files)
def test_fuzz_a_hostile_rules_file_long(tmp_path: Path, raw: bytes) -> None:
    _hostile_rules_file(tmp_path, raw)
