"""Rollout reports: the JSON's shape (spec as an object, verdicts with their sample counts)
and the PNG timeline, from a controller database built by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from agent.controller import report as report_module
from agent.controller.plan import PlannedCommand, command_seq
from agent.controller.report import build_report, step_spans, write_report
from agent.controller.spec import parse_spec
from agent.controller.state import ControllerState
from agent.controller.timeline import phases, write_timeline
from agent.core.errors import ConfigError
from agent.wire.messages import Ack

RID = "r-digits-slow"
SHA = "ab" * 32
THINGS = ("pi-1", "pi-2", "jet-1")
REASON = ("p99_ratio in class:rasp4b: green p99 25049 us is 219.73x blue's 114 us "
          "(limit 2x, 500 us over)")
PNG = b"\x89PNG\r\n\x1a\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def spec_json() -> str:
    return parse_spec({
        "name": RID, "model": "digits-v1-slow", "groups": ["kitchen"],
        "packages": {"rasp4b": {"url": "https://e.com/p.tgz", "sha256": SHA, "version": 2}},
        "strategy": {"type": "all_at_once", "watch_s": 60},
        "shadow": {"duration_s": 60, "sample_rate": 0.5}, "weights": [10, 50, 100],
        "guardrails": {"min_samples": 50, "max_p99_us": 40000}}).model_dump_json()


class Rollout:
    """Writes what the controller would, step by step, at times the test chooses."""

    def __init__(self, path: Path, *, details: bool = True) -> None:
        self.clock = Clock()
        self.state = ControllerState(path=path, clock=self.clock)
        self.state.start_rollout(rollout_id=RID, spec_json=spec_json())
        self.details, self.seq, self.t0 = details, 0, self.clock.now

    def at(self, t: float) -> Rollout:
        self.clock.now = self.t0 + t
        return self

    def step(self, index: int, name: str, mode: str, weight: int | None) -> None:
        self.state.set_step(RID, index)
        detail: dict[str, Any] = {"name": name}
        if self.details:
            detail.update(mode=mode, green_weight=weight, watch_s=30.0, devices=len(THINGS),
                          sample_rate=0.5 if mode == "shadow" else None)
        self.state.log(RID, "step", step_index=index, detail=detail)

    def command(self, index: int, action: str, *, ack_after: float = 1.0,
                **args: Any) -> None:
        for ordinal, thing in enumerate(THINGS):
            held = self.state.decide(PlannedCommand(
                rollout_id=RID, thing=thing, step_index=index, ordinal=0, action=action,  # type: ignore[arg-type]
                rollout_seq=command_seq(index, 0), args=MappingProxyType(args)))
            self.state.mark_sent(held.command_id)
            now = self.clock.now
            self.clock.now += ack_after + ordinal
            self.seq += 1
            self.state.record_ack(Ack(thing=thing, seq=self.seq, sent_at=0,
                                      command_id=held.command_id, rollout_id=RID,
                                      rollout_seq=command_seq(index, 0), outcome="ok"))
            self.clock.now = now

    def verdict(self, index: int, status: str, green: float | None, blue: float | None,
                agreement: float | None, samples: int) -> None:
        detail: dict[str, Any] = {"status": status, "green_p99_us": green,
                                  "blue_p99_us": blue, "agreement": agreement}
        if self.details:
            detail.update(samples=samples, min_samples=50, devices=len(THINGS), min_devices=1,
                          scopes=[{"where": "class:rasp4b", "samples": samples,
                                   "reporting": len(THINGS), "green_p99_us": green,
                                   "blue_p99_us": blue, "error_rate": 0.0,
                                   "agreement": agreement, "enough": samples >= 50}])
        self.state.log(RID, "verdict", step_index=index, detail=detail)


def slow_rollout(path: Path, *, details: bool = True) -> ControllerState:
    """Shadow, two weighted steps and a serve step whose green is 25 ms: rolled back."""
    r = Rollout(path, details=details)
    r.at(1).step(0, "shadow", "shadow", None)
    r.at(2).command(0, "shadow", sample_rate=0.5)
    for i, t in enumerate(range(10, 70, 10)):
        r.at(t).verdict(0, "insufficient" if i < 2 else "pass", 118.0 + i, 114.0,
                        0.97 - 0.01 * (i % 2), 25 * (i + 1))
    r.at(70).step(1, "all@10", "weighted", 10)
    r.at(71).command(1, "set_weights", blue=90, green=10)
    for i, t in enumerate(range(80, 120, 10)):
        r.at(t).verdict(1, "insufficient" if i == 0 else "pass", 121.0, 114.0, None,
                        30 * (i + 1))
    r.at(120).step(2, "all@50", "weighted", 50)
    r.at(121).command(2, "set_weights", blue=50, green=50)
    for i, t in enumerate(range(130, 170, 10)):
        r.at(t).verdict(2, "pass", 119.0, 114.0, None, 60 * (i + 1))
    r.at(170).step(3, "all", "serve", 100)
    r.at(171).command(3, "promote")
    r.at(180).verdict(3, "insufficient", 24800.0, None, None, 20)  # no baseline yet
    r.at(190).verdict(3, "insufficient", 24950.0, None, None, 45)
    r.at(200).verdict(3, "breach", 25049.0, 114.0, None, 80)
    r.at(200.5).state.log(RID, "rollback", step_index=3,
                          detail={"reason": REASON, "devices": len(THINGS)})
    r.command(4, "rollback")
    r.at(204).state.set_status(RID, "rolled_back", reason=REASON)
    return r.state


def test_report_json_has_the_spec_as_an_object_and_the_verdicts(tmp_path: Path) -> None:
    with slow_rollout(tmp_path / "c.db") as state:
        written = write_report(state, RID, tmp_path / "out")
    assert [p.name for p in written] == [f"{RID}.json", f"{RID}.png"]
    report = json.loads(written[0].read_text())
    rollout = report["rollout"]
    assert "spec_json" not in rollout and isinstance(rollout["spec"], dict)
    assert rollout["spec"] == json.loads(spec_json())
    assert rollout["spec"]["guardrails"]["min_samples"] == 50
    assert rollout["status"] == "rolled_back" and rollout["reason"] == REASON

    verdicts = report["verdicts"]
    assert len(verdicts) == 6 + 4 + 4 + 3
    first, last = verdicts[0], verdicts[-1]
    assert (first["step_index"], first["step"], first["status"]) == (0, "shadow",
                                                                      "insufficient")
    assert (first["samples"], first["min_samples"], first["devices"],
            first["min_devices"]) == (25, 50, 3, 1)
    assert first["t_s"] == 10.0 and first["agreement"] == 0.97
    assert first["scopes"][0]["where"] == "class:rasp4b" and not first["scopes"][0]["enough"]
    assert (last["status"], last["step"], last["green_p99_us"], last["samples"]) == (
        "breach", "all", 25049.0, 80)
    assert verdicts[-3]["blue_p99_us"] is None  # no baseline: null, never 0

    assert [(s["index"], s["name"], s["mode"], s["green_weight"]) for s in report["steps"]] == [
        (0, "shadow", "shadow", None), (1, "all@10", "weighted", 10),
        (2, "all@50", "weighted", 50), (3, "all", "serve", 100)]
    assert report["steps"][-1]["end_s"] == 200.5  # the rollback stopped the last step
    assert {a["action"] for a in report["assignments"]} == {
        "shadow", "set_weights", "promote", "rollback"}
    assert all(a["outcome"] == "ok" for a in report["assignments"])
    kinds = [d["kind"] for d in report["decisions"]]
    assert kinds.count("verdict") == len(verdicts) and "rollback" in kinds
    png = written[1].read_bytes()
    assert png[:8] == PNG and len(png) > 10_000


def test_old_database_without_step_or_sample_details(tmp_path: Path) -> None:
    with slow_rollout(tmp_path / "c.db", details=False) as state:
        report = build_report(state, RID)
        png = write_timeline(state, RID, tmp_path / "old.png")
    verdict = report["verdicts"][0]
    assert verdict["samples"] is None and verdict["min_samples"] is None
    assert verdict["scopes"] == [] and verdict["status"] == "insufficient"
    # the mode comes from each step's commands when the step decision only has a name
    assert [s["mode"] for s in report["steps"]] == ["shadow", "weighted", "weighted", "serve"]
    assert report["steps"][1]["green_weight"] is None
    assert png.read_bytes()[:8] == PNG


def test_phases_are_runs_of_steps_then_the_rollback(tmp_path: Path) -> None:
    with slow_rollout(tmp_path / "c.db") as state:
        record = state.rollout(RID)
        assert record is not None
        decisions, assignments = state.decisions(RID), state.assignments(RID)
    spans = step_spans(record, decisions, assignments)
    found = phases(spans, decisions, record.created_at, 210.0)
    assert [(p.kind, p.label, p.start, p.end) for p in found] == [
        ("shadow", "shadow step", 1.0, 70.0), ("weighted", "weighted steps", 70.0, 170.0),
        ("serve", "serve step", 170.0, 200.5), ("rollback", "rollback", 200.5, 210.0)]


def test_a_rollout_just_started_and_a_paused_one(tmp_path: Path) -> None:
    r = Rollout(tmp_path / "c.db")
    r.at(1).step(0, "canary", "serve", 100)
    with r.state as state:
        written = write_report(state, RID, tmp_path / "out")  # no verdict, no ack yet
        assert json.loads(written[0].read_text())["verdicts"] == []
        assert written[1].read_bytes()[:8] == PNG
        r.at(5).state.set_status(RID, "paused", reason="step canary undecided after 600 s")
        r.at(9).state.set_status(RID, "running")
        record = state.rollout(RID)
        assert record is not None
        decisions = state.decisions(RID)
        spans = step_spans(record, decisions, state.assignments(RID))
        assert ("paused", 5.0, 9.0) in [(p.kind, p.start, p.end) for p in
                                        phases(spans, decisions, record.created_at, 9.0)]
        assert write_timeline(state, RID, tmp_path / "paused.png").stat().st_size > 0


def test_unknown_rollout_and_no_matplotlib(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with slow_rollout(tmp_path / "c.db") as state:
        with pytest.raises(ConfigError, match="no rollout 'nope'"):
            write_report(state, "nope", tmp_path)
        monkeypatch.setattr(report_module, "has_matplotlib", lambda: False)
        assert [p.name for p in write_report(state, RID, tmp_path)] == [f"{RID}.json"]
