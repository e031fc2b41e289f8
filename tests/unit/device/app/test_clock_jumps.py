"""The device's wall clock jumping backwards and forwards by days (NTP after a boot without
RTC, a operator's ``date -s``): trials, command staleness and the schedules hold, because
every timer runs on the monotonic clock and nothing kept across restarts holds a time.

The wall clock is made to jump in-process (``time.time`` replaced by a clock that moves by
days on demand) and the monotonic clock is injected where the code takes one, so no test
changes the machine's own clock.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.device.app.scheduler import Scheduler
from agent.device.store.store import ModelStore
from agent.wire.commands import PromoteCommand
from agent.wire.errors import ReplayError, StaleCommandError
from agent.wire.messages import Event
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.stamp import Stamper

DAY = 86_400.0
THING = "clock-1"
_real_time, _real_time_ns = time.time, time.time_ns


class WallClock:
    """``time.time`` that jumps by :meth:`jump`; the monotonic clock is left alone."""

    def __init__(self) -> None:
        self.offset = 0.0

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return _real_time() + self.offset

    def time_ns(self) -> int:
        return _real_time_ns() + int(self.offset * 1e9)


@pytest.fixture()
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    clock = WallClock()
    monkeypatch.setattr(time, "time", clock.time)
    monkeypatch.setattr(time, "time_ns", clock.time_ns)
    return clock


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add(store: ModelStore, tmp_path: Path, version_id: str) -> None:
    package = tmp_path / "staging" / version_id
    (package / "dlr").mkdir(parents=True)
    (package / "model.json").write_text(json.dumps({"version": version_id}))
    store.add(package, version_id=version_id, manifest={"version": version_id})


@pytest.fixture()
def store_root(tmp_path: Path) -> Iterator[tuple[Path, Monotonic]]:
    """A store with v1 current and v2 promoted on a 60 s trial at monotonic 1000."""
    clock = Monotonic()
    with ModelStore(tmp_path / "store", clock=clock) as store:
        store.recover()
        _add(store, tmp_path, "v1")
        store.promote("v1", trial_s=1.0)
        store.confirm_trial()
        _add(store, tmp_path, "v2")
        store.promote("v2", trial_s=60.0)
    yield tmp_path / "store", clock


@pytest.mark.parametrize("jumps", [(-3 * DAY,), (5 * DAY,), (-30 * DAY, 60 * DAY, -7 * DAY)])
def test_a_trial_lasts_its_seconds_whatever_the_wall_clock_does(
        tmp_path: Path, wall: WallClock, jumps: tuple[float, ...]) -> None:
    clock = Monotonic()
    with ModelStore(tmp_path / "store", clock=clock) as store:
        store.recover()
        _add(store, tmp_path, "v1")
        _add(store, tmp_path, "v2")
        store.promote("v2", trial_s=60.0)
        for jump in jumps:
            wall.jump(jump)
            clock.now += 10
        assert store.trial_remaining_s() == pytest.approx(60.0 - 10 * len(jumps))
        clock.now += 60
        wall.jump(-jumps[0])
        assert store.trial_remaining_s() == 0.0  # due: the agent ends it on its next tick
        store.confirm_trial()
        assert store.current() == "v2" and store.trial() is None


@pytest.mark.parametrize("jump", [-3 * DAY, 40 * DAY])
def test_a_trial_that_survived_a_restart_ends_whatever_the_wall_clock_says(
        store_root: tuple[Path, Monotonic], wall: WallClock, jump: float) -> None:
    root, _ = store_root
    record = json.loads((root / "trial").read_text())
    assert {"version_id", "trial_s"} <= set(record) <= {
        "version_id", "trial_s", "rollout_id", "from_current", "from_previous",
        "from_current_rollout", "from_previous_rollout"}, "no time kept: none misjudged"
    wall.jump(jump)  # the trial now started "in the future", or weeks ago
    with ModelStore(root, clock=Monotonic()) as store:
        assert store.trial() is not None and store.trial_remaining_s() == 0.0
        store.recover()
        assert store.trial() is None, "a restart ends the trial, at once"
        assert store.current() == "v1", "back to the model before the trial"


def _promote(seq: int, issued_at_s: float, rollout: str = "r-clock") -> PromoteCommand:
    return PromoteCommand(rollout_id=rollout, rollout_seq=seq,
                          issued_at=max(0, int(issued_at_s * 1000)),
                          target={"kind": "thing", "name": THING}, args={})


def test_command_staleness_is_judged_by_sequence_never_by_a_clock(
        tmp_path: Path, wall: WallClock) -> None:
    state = tmp_path / "replay.json"
    guard = ReplayGuard(thing=THING, state_path=state)
    now = time.time()
    guard.admit(_promote(1, now + 5 * DAY))  # the controller's clock far ahead: no matter
    wall.jump(-10 * DAY)
    guard.admit(_promote(2, now - 5 * DAY))  # issued "last week", yet the newest: admitted
    first = _promote(1, now + 6 * DAY)
    with pytest.raises(StaleCommandError):
        guard.admit(first)  # a fresher issued_at does not revive an old rollout_seq
    wall.jump(30 * DAY)
    restarted = ReplayGuard(thing=THING, state_path=state)  # the marks survive the restart
    replayed = _promote(2, now)
    with pytest.raises((ReplayError, StaleCommandError)):
        restarted.admit(replayed)
    restarted.admit(_promote(3, 0))  # issued_at of 1970: still admitted, by its sequence
    assert restarted.highest("r-clock") == 3


def test_a_wall_clock_before_1970_still_stamps_valid_messages(tmp_path: Path) -> None:
    offsets = iter([-30_000 * DAY, 0.0, 9 * DAY])  # 1940, now, next week
    stamper = Stamper(thing=THING, counter=SequenceCounter(path=tmp_path / "seq"),
                      wall_clock=lambda: _real_time() + next(offsets))
    messages = [stamper.make(Event, kind="agent_error", detail="clock") for _ in range(3)]
    assert messages[0].sent_at == 0  # clamped, and the message is still valid
    assert [m.seq for m in messages] == sorted({m.seq for m in messages})
    assert messages[2].sent_at > messages[1].sent_at


@dataclass
class _Calls:
    at: dict[str, list[float]] = field(default_factory=lambda: {"heartbeat": [],
                                                                "metrics": [], "tick": []})

    def note(self, what: str) -> None:
        self.at[what].append(time.monotonic())


def test_heartbeats_and_metrics_keep_their_intervals_through_wall_clock_jumps(
        wall: WallClock) -> None:
    calls = _Calls()
    config = SimpleNamespace(metrics_interval_seconds=0.2, heartbeat_interval_seconds=0.1,
                             guardrails=SimpleNamespace(max_rss_bytes=None,
                                                        max_soc_temp_c=None))
    stop = threading.Event()
    parts: dict[str, Any] = {
        "settings": SimpleNamespace(config=config, take_change=lambda: False),
        "reports": SimpleNamespace(heartbeat=lambda: calls.note("heartbeat"),
                                   metrics=lambda: calls.note("metrics")),
        "swaps": SimpleNamespace(tick=lambda **_: calls.note("tick")),
        "health": SimpleNamespace(), "outbox": SimpleNamespace(event=lambda *a, **k: None),
        "worker": SimpleNamespace(is_alive=lambda: True)}
    scheduler = Scheduler(stop_event=stop, **parts)
    thread = threading.Thread(target=scheduler.run, daemon=True)
    started = time.monotonic()
    thread.start()
    for jump in (3 * DAY, -10 * DAY, 45 * DAY, -38 * DAY):
        time.sleep(0.4)
        wall.jump(jump)
    time.sleep(0.4)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    ran = time.monotonic() - started
    for what, interval in (("heartbeat", 0.1), ("metrics", 0.2), ("tick", 0.25)):
        times = calls.at[what]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        expected = ran / interval
        assert 0.6 * expected <= len(times) <= expected + 2, (what, len(times), ran)
        assert min(gaps) >= interval * 0.95, (what, min(gaps))  # no burst after a jump
        assert max(gaps) <= interval + 0.5, (what, max(gaps))  # and no stall
