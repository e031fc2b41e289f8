"""What a ``stage`` command may read and who may cut it short.

A ``stage`` whose URL is a ``file://`` path reads it only from the agent's package
folders (:func:`package_dirs`: ``packageDirs``, by default ``<stateDir>/packages/inbox``
and the folder of ``initialPackage``). A ``stage`` in progress is cancelled by a command
that supersedes it (:func:`supersedes`), checked on the transport's thread as it arrives
(:meth:`RunningStage.interrupt`): the download stops within a fraction of a second, the
stage is answered ``failed`` with ``code`` ``fetch_cancelled``, and the command that
cancelled it runs next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from agent.device.app.commands import AckScalar, Result
from agent.device.app.config import AgentConfig
from agent.device.packages.errors import FetchCancelledError
from agent.wire.commands import Command

log = logging.getLogger("edge_agent.swaps")
INBOX = Path("packages") / "inbox"  # under stateDir


def package_dirs(config: AgentConfig) -> tuple[Path, ...]:
    """The folders a ``stage`` command's ``file://`` URL may name, as absolute paths."""
    if config.package_dirs is not None:
        return tuple(path.absolute() for path in config.package_dirs)
    found = [config.state_dir / INBOX]
    initial = config.initial_package
    if initial is not None:
        found.append(initial.parent if initial.is_file() else initial)
    return tuple(path.absolute() for path in found)


def supersedes(new: Command, running: Command) -> bool:
    """Whether ``new`` makes the ``running`` stage pointless: a stage of another rollout or
    of a newer ``rollout_seq``, or the running stage's own rollout's rollback."""
    if new.command_id == running.command_id:
        return False
    if new.action == "rollback":
        return new.rollout_id == running.rollout_id
    if new.action == "stage":
        return new.rollout_id != running.rollout_id or new.rollout_seq > running.rollout_seq
    return False


class RunningStage:
    """The stage command in progress, if any, and the event that cancels it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._command: Command | None = None
        self._cancel = threading.Event()
        self.cancelled_by: Command | None = None

    @contextlib.contextmanager
    def running(self, command: Command) -> Iterator[threading.Event]:
        """While the body runs, ``command`` is the stage a newer command may cancel; the
        event given is set when one does."""
        cancel = threading.Event()
        with self._lock:
            self._command, self._cancel, self.cancelled_by = command, cancel, None
        try:
            yield cancel
        finally:
            with self._lock:
                self._command = None

    def interrupt(self, command: Command) -> bool:
        """Cancel the running stage if ``command`` supersedes it; whether it did."""
        with self._lock:
            running = self._command
            if running is None or self._cancel.is_set() or not supersedes(command, running):
                return False
            self.cancelled_by = command
            self._cancel.set()
        log.warning("stage %s of rollout %s seq %d cancelled by %s %s of rollout %s seq %d",
                    running.command_id, running.rollout_id, running.rollout_seq,
                    command.action, command.command_id, command.rollout_id, command.rollout_seq)
        return True

    def cancelled(self, err: FetchCancelledError) -> Result:
        """The answer to the stage ``err`` cancelled."""
        by = self.cancelled_by
        data: dict[str, AckScalar] = {"code": err.code}
        detail = str(err)
        if by is not None:
            data.update(cancelled_by=by.command_id, by_action=by.action,
                        by_rollout_id=by.rollout_id, by_rollout_seq=by.rollout_seq)
            detail += (f" ({by.action} {by.command_id} of rollout {by.rollout_id} "
                       f"seq {by.rollout_seq})")
        return Result("failed", f"{type(err).__name__}: {detail}"[:512], data=data)
