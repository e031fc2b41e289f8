"""The device's guard against replayed, stale and misaddressed commands.

Call :meth:`ReplayGuard.admit` only on a command whose signature verified:
it records what it admits, and a forged command must not be able to raise a
rollout's high-water mark. A command passes when, in this order:

1. its target is this thing, or a group this device is in   (else WrongTargetError)
2. its message ``id`` was not seen before                   (else ReplayError)
3. its ``command_id`` was not seen before                   (else ReplayError: re-ack it)
4. its rollout was not retired                              (else StaleCommandError)
5. its ``rollout_seq`` is above the highest admitted for its rollout; the same
   ``rollout_seq`` under the same ``command_id`` is a replay (ReplayError), under
   another ``command_id`` a conflict (StaleCommandError).

Staleness is judged by sequence only, never by ``issued_at`` or any clock: the
controller's and the device's clocks may disagree by years.

Memory is bounded: the last ``max_ids`` message and command ids, and the
``max_rollouts`` most recently used rollouts. With ``state_path`` the rollout
marks (and retired rollouts) are written durably on every admit, so a replay
after a reboot is still refused: the latest command of a rollout is recognised
as a replay, earlier ones as stale. Ids are kept in memory only.

An admitted command is recorded before it is applied: if applying fails the
device acks ``failed``, and the controller retries with a higher rollout_seq.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.core.durable import atomic_write
from agent.wire.commands import Command
from agent.wire.errors import (
    ReplayError,
    StaleCommandError,
    StateFileError,
    WrongTargetError,
)
from agent.wire.topics import check_name


class ReplayGuard:
    """Admits each command once, in rollout order, if it is addressed to this device."""

    def __init__(self, *, thing: str, groups: Iterable[str] = (), max_ids: int = 10_000,
                 max_rollouts: int = 1024, state_path: Path | None = None) -> None:
        if max_ids < 1 or max_rollouts < 1:
            raise ValueError("max_ids and max_rollouts must be >= 1")
        self.thing = check_name("thing name", thing)
        self._groups = frozenset(check_name("group", g) for g in groups)
        self._max_ids = max_ids
        self._max_rollouts = max_rollouts
        self._state_path = state_path
        self._lock = threading.Lock()
        self._message_ids: OrderedDict[str, None] = OrderedDict()
        self._command_ids: OrderedDict[str, None] = OrderedDict()
        self._rollouts: OrderedDict[str, tuple[int, str]] = OrderedDict()  # seq, command_id
        self._retired: OrderedDict[str, None] = OrderedDict()
        if state_path is not None:
            self._load(state_path)

    @property
    def groups(self) -> frozenset[str]:
        return self._groups

    def set_groups(self, groups: Iterable[str]) -> None:
        """Group membership changed (a configuration update)."""
        self._groups = frozenset(check_name("group", g) for g in groups)

    def highest(self, rollout_id: str) -> int | None:
        """The highest rollout_seq admitted for ``rollout_id`` (None if none)."""
        with self._lock:
            mark = self._rollouts.get(rollout_id)
            return None if mark is None else mark[0]

    def check(self, command: Command) -> None:
        """Raise if ``command`` would be refused; records nothing."""
        with self._lock:
            self._check(command)

    def admit(self, command: Command) -> None:
        """Check ``command`` and record it as admitted (call after verifying its signature)."""
        with self._lock:
            self._check(command)
            self._remember(self._message_ids, command.id)
            self._remember(self._command_ids, command.command_id)
            self._rollouts[command.rollout_id] = (command.rollout_seq, command.command_id)
            self._rollouts.move_to_end(command.rollout_id)
            while len(self._rollouts) > self._max_rollouts:
                self._rollouts.popitem(last=False)
            self._save()

    def retire(self, rollout_id: str) -> None:
        """Refuse every later command of ``rollout_id`` (it finished or was superseded)."""
        with self._lock:
            self._rollouts.pop(rollout_id, None)
            self._retired[rollout_id] = None
            self._retired.move_to_end(rollout_id)
            while len(self._retired) > self._max_rollouts:
                self._retired.popitem(last=False)
            self._save()

    def _check(self, command: Command) -> None:
        related = command.command_id
        target = command.target
        if target.kind == "thing" and target.name != self.thing:
            raise WrongTargetError(f"command is for thing {target.name!r}, not {self.thing!r}",
                                   related_id=related)
        if target.kind == "group" and target.name not in self._groups:
            raise WrongTargetError(f"command is for group {target.name!r}, which this device "
                                   f"is not in", related_id=related)
        if command.id in self._message_ids:
            raise ReplayError(f"message {command.id} was received before", related_id=related)
        if command.command_id in self._command_ids:
            raise ReplayError(f"command {related} was received before", related_id=related)
        if command.rollout_id in self._retired:
            raise StaleCommandError(f"rollout {command.rollout_id!r} is finished",
                                    related_id=related)
        mark = self._rollouts.get(command.rollout_id)
        if mark is None:
            return
        highest, highest_command = mark
        if command.rollout_seq < highest:
            raise StaleCommandError(
                f"rollout_seq {command.rollout_seq} is below {highest}, already applied for "
                f"rollout {command.rollout_id!r}", related_id=related)
        if command.rollout_seq == highest:
            if command.command_id == highest_command:
                raise ReplayError(f"command {related} was received before", related_id=related)
            raise StaleCommandError(
                f"rollout_seq {highest} of rollout {command.rollout_id!r} was already used "
                f"by command {highest_command}", related_id=related)

    def _remember(self, ids: OrderedDict[str, None], value: str) -> None:
        ids[value] = None
        while len(ids) > self._max_ids:
            ids.popitem(last=False)

    def _save(self) -> None:
        if self._state_path is None:
            return
        state: dict[str, Any] = {
            "v": 1,
            "rollouts": [[rid, seq, cid] for rid, (seq, cid) in self._rollouts.items()],
            "retired": list(self._retired),
        }
        try:
            atomic_write(self._state_path, json.dumps(state, separators=(",", ":")).encode())
        except OSError as err:
            raise StateFileError(f"{self._state_path}: cannot record replay marks: "
                                 f"{err.strerror or err}") from err

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as err:
            raise StateFileError(f"{path}: {err.strerror or err}") from err
        try:
            state = json.loads(text)
            if state.get("v") != 1:
                raise ValueError("unknown version")
            for rollout_id, seq, command_id in state["rollouts"]:
                if not (isinstance(rollout_id, str) and type(seq) is int
                        and isinstance(command_id, str)):
                    raise ValueError("bad rollout mark")
                self._rollouts[rollout_id] = (seq, command_id)
            for rollout_id in state["retired"]:
                if not isinstance(rollout_id, str):
                    raise ValueError("bad retired rollout")
                self._retired[rollout_id] = None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StateFileError(f"{path}: not a replay-guard state file ({err})") from err
