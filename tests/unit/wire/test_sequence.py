"""Sequences that never repeat, commands admitted once and in order, stale reports dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from paths import REPO_ROOT

from agent.core.errors import ConfigError
from agent.wire.commands import Command, PromoteCommand, StatusCommand, Target
from agent.wire.errors import (
    ReplayError,
    StaleCommandError,
    StateFileError,
    WrongTargetError,
)
from agent.wire.messages import Heartbeat, Metrics
from agent.wire.replay import ReplayGuard
from agent.wire.senders import SenderTracker
from agent.wire.sequence import SequenceCounter, read_reserved
from agent.wire.stamp import Stamper

THING = "pi-01"


# --- SequenceCounter -------------------------------------------------------------------


def test_counter_counts_and_reserves_ahead(tmp_path: Path) -> None:
    path = tmp_path / "state" / "seq.json"
    counter = SequenceCounter(path=path, block=10)
    assert [counter.next() for _ in range(25)] == list(range(25))
    assert read_reserved(path) == 30  # three blocks reserved, handed out up to 24
    assert len(counter.boot_id) == 32


def test_a_restart_skips_but_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    first = SequenceCounter(path=path, block=100)
    handed = [first.next() for _ in range(7)]
    second = SequenceCounter(path=path, block=100)  # the first "crashed" without a word
    assert second.next() == 100 > max(handed)
    assert second.boot_id != first.boot_id
    third = SequenceCounter(path=path, block=100)
    assert third.next() == 200


def test_threads_never_share_a_number(tmp_path: Path) -> None:
    counter = SequenceCounter(path=tmp_path / "seq.json", block=7)
    seen: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [counter.next() for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(2000))


CHILD = """
import sys
from pathlib import Path
from agent.wire.sequence import SequenceCounter
counter = SequenceCounter(path=Path(sys.argv[1]), block=int(sys.argv[2]))
while True:
    print(counter.next(), flush=True)
"""


@pytest.mark.parametrize("block", [1, 13])
def test_sequence_survives_sigkill(tmp_path: Path, block: int) -> None:
    path = tmp_path / "seq.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(block)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert child.stdout is not None
    handed: list[int] = []
    try:
        while len(handed) < 300:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            handed.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert handed == list(range(len(handed)))
    restarted = SequenceCounter(path=path, block=block)
    assert restarted.next() > max(handed)


def test_a_corrupt_sequence_file_stops_the_counter(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(StateFileError, match="not a sequence file"):
        SequenceCounter(path=path)
    path.write_text('{"next": -4}')
    with pytest.raises(StateFileError, match="must be an integer"):
        SequenceCounter(path=path)
    assert isinstance(StateFileError("x"), ConfigError)


def test_an_unwritable_sequence_file_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateFileError, match=r"seq\.json: "):
        SequenceCounter(path=blocker / "seq.json")


def test_stamper_fills_the_envelope(tmp_path: Path) -> None:
    counter = SequenceCounter(path=tmp_path / "seq.json")
    stamper = Stamper(thing=THING, counter=counter, wall_clock=lambda: 1_700_000_000.25)
    first = stamper.make(Heartbeat, uptime_s=1.0, boot_id=stamper.boot_id, models={})
    second = stamper.make(Heartbeat, uptime_s=2.0, boot_id=stamper.boot_id, models={})
    assert (first.thing, first.seq, first.sent_at) == (THING, 0, 1_700_000_000_250)
    assert second.seq == 1 and second.id != first.id
    unset_clock = Stamper(thing=THING, counter=counter, wall_clock=lambda: -5.0)
    assert unset_clock.make(Heartbeat, uptime_s=0.0, boot_id=counter.boot_id,
                            models={}).sent_at == 0


# --- ReplayGuard -----------------------------------------------------------------------


def _command(seq: int, *, rollout: str = "r1", command_id: str | None = None,
             target: Target | None = None, cls: type[Command] = PromoteCommand) -> Command:
    fields: dict[str, Any] = {}
    if command_id is not None:
        fields["command_id"] = command_id
    return cls(target=target or Target(kind="thing", name=THING), rollout_id=rollout,
               rollout_seq=seq, issued_at=0, **fields)


def test_commands_for_another_thing_or_group() -> None:
    guard = ReplayGuard(thing=THING, groups=["canary"])
    with pytest.raises(WrongTargetError, match="for thing 'pi-02', not 'pi-01'"):
        guard.admit(_command(1, target=Target(kind="thing", name="pi-02")))
    with pytest.raises(WrongTargetError, match="group 'fleet'"):
        guard.admit(_command(1, target=Target(kind="group", name="fleet")))
    guard.admit(_command(1, target=Target(kind="group", name="canary")))
    guard.set_groups(["fleet"])
    guard.admit(_command(2, target=Target(kind="group", name="fleet")))
    with pytest.raises(WrongTargetError):
        guard.admit(_command(3, target=Target(kind="group", name="canary")))


def test_a_replayed_message_id_or_command_id() -> None:
    guard = ReplayGuard(thing=THING)
    command = _command(1)
    guard.admit(command)
    with pytest.raises(ReplayError, match="received before") as info:
        guard.admit(command)
    assert info.value.related_id == command.command_id
    resent = command.model_copy(update={"id": "e" * 32})  # same command, new transmission
    with pytest.raises(ReplayError, match=f"command {command.command_id}"):
        guard.admit(resent)


def test_stale_and_conflicting_rollout_seqs() -> None:
    guard = ReplayGuard(thing=THING)
    guard.admit(_command(5))
    with pytest.raises(StaleCommandError, match="rollout_seq 4 is below 5"):
        guard.admit(_command(4))
    with pytest.raises(StaleCommandError, match="already used by command"):
        guard.admit(_command(5))  # same step, another command: a conflict
    guard.admit(_command(6))
    guard.admit(_command(1, rollout="r2"))  # rollouts are independent
    assert guard.highest("r1") == 6 and guard.highest("r2") == 1
    guard.check(_command(7))  # check records nothing
    guard.admit(_command(7))


def test_a_retired_rollout_is_refused() -> None:
    guard = ReplayGuard(thing=THING)
    guard.admit(_command(1, rollout="r1"))
    guard.retire("r1")
    with pytest.raises(StaleCommandError, match="rollout 'r1' is finished"):
        guard.admit(_command(2, rollout="r1"))


def test_marks_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "replay.json"
    guard = ReplayGuard(thing=THING, state_path=state)
    early, latest = _command(1), _command(2)
    guard.admit(early)
    guard.admit(latest)
    guard.admit(_command(1, rollout="old"))
    guard.retire("old")
    rebooted = ReplayGuard(thing=THING, state_path=state)
    with pytest.raises(ReplayError):
        rebooted.admit(latest)  # recognised: re-ack it
    with pytest.raises(StaleCommandError):
        rebooted.admit(early)
    with pytest.raises(StaleCommandError, match="finished"):
        rebooted.admit(_command(2, rollout="old"))
    rebooted.admit(_command(3))


def test_a_corrupt_guard_state_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "replay.json"
    state.write_text('{"v": 1, "rollouts": [["r1", "two", "c"]], "retired": []}')
    with pytest.raises(StateFileError, match="not a replay-guard state file"):
        ReplayGuard(thing=THING, state_path=state)


def test_memory_is_bounded() -> None:
    guard = ReplayGuard(thing=THING, max_ids=3, max_rollouts=2)
    commands = [_command(1, rollout=f"r{i}", cls=StatusCommand) for i in range(5)]
    for command in commands:
        guard.admit(command)
    assert guard.highest("r0") is None and guard.highest("r4") == 1
    assert len(guard._message_ids) == 3 and len(guard._rollouts) == 2
    guard.admit(commands[0])  # forgotten: bounded memory is the documented trade-off


# --- SenderTracker ---------------------------------------------------------------------


def _heartbeat(seq: int, thing: str = THING, boot_id: str = "a" * 32) -> Heartbeat:
    return Heartbeat(thing=thing, seq=seq, sent_at=0, uptime_s=0.0, boot_id=boot_id, models={})


def test_tracker_drops_reports_at_or_below_the_last_seq() -> None:
    clock = iter([10.0, 11.0, 12.0, 13.0])
    tracker = SenderTracker(clock=lambda: next(clock))
    assert tracker.observe(_heartbeat(5))
    assert tracker.is_stale(_heartbeat(5)) and tracker.is_stale(_heartbeat(3))
    assert not tracker.observe(_heartbeat(5))  # a QoS 1 redelivery
    assert not tracker.is_stale(_heartbeat(6))
    assert tracker.observe(_heartbeat(1000, boot_id="b" * 32))  # a restart skips ahead
    state = tracker.state(THING)
    assert state is not None and state.seq == 1000 and state.boot_id == "b" * 32
    assert not tracker.is_stale(_heartbeat(1, thing="pi-02"))  # per thing


def test_tracker_measures_silence_on_the_receivers_clock() -> None:
    tracker = SenderTracker(clock=lambda: 0.0)
    tracker.observe(_heartbeat(1), now=100.0)
    tracker.observe(_heartbeat(1, thing="pi-02"), now=150.0)
    assert tracker.silent_for(THING, now=160.0) == 60.0
    assert tracker.silent_for("pi-03", now=160.0) is None
    assert tracker.silent_things(longer_than_s=30.0, now=160.0) == [THING]
    tracker.forget(THING)
    assert tracker.observe(_heartbeat(0), now=170.0)


def test_tracker_accepts_any_up_message() -> None:
    tracker = SenderTracker()
    metrics = Metrics(thing=THING, seq=3, sent_at=0, boot_id="c" * 32, variants={})
    assert tracker.observe(metrics)
    assert tracker.is_stale(_heartbeat(2))


def test_a_full_disk_stops_the_counter_rather_than_repeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = SequenceCounter(path=tmp_path / "seq.json", block=2)
    assert [counter.next(), counter.next()] == [0, 1]

    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.wire.sequence.atomic_write", full)
    with pytest.raises(StateFileError, match="cannot record the sequence: No space left"):
        counter.next()
