"""The on-disk store of verified model versions for one model slot.

The files it keeps are described in :mod:`agent.device.store.layout`; the JSON
records in them in :mod:`agent.device.store.records`.

A trial's deadline is a duration counted on this process's monotonic clock; a
restart during a trial fails the trial.

A pointer's ``rollout_id`` names the fleet rollout that promoted the version (absent:
none did, or it is not known, as in files written before it was kept). It moves with
the version: a promotion keeps the old current's in ``previous``, and the trial record
keeps both (``from_current_rollout``, ``from_previous_rollout``), so that undoing a
promotion restores the pointers exactly. A rollback's ``to_rollout`` and
``previous_rollout`` do the same for the pointers it sets. The agent scopes a fleet
rollback to what the asking rollout did by this id.

Every multi-file change is journaled so that a SIGKILL at any instant, followed by
:meth:`ModelStore.recover`, leaves ``current`` and ``previous`` on complete
versions. ``trial`` is the undo record of a promotion (recovery restores the
pointers it names); ``rollback`` is the redo record of a rollback (recovery
completes it). Recovery itself lives in :mod:`agent.device.store.recovery`.

Errors (:mod:`agent.device.store.errors`)::

    AgentError
    └── StoreError                 the store refused an operation; nothing changed
        ├── StoreLockedError       another process owns the store
        ├── StoreCorruptError      a store file cannot be read
        ├── StoreIOError           the file system failed (full disk, permissions)
        ├── InvalidVersionIdError  not a safe directory name
        ├── VersionExistsError     add() of a version already stored
        ├── UnknownVersionError    no complete version with that id
        ├── TrialPendingError      promote() while another trial runs
        ├── NoTrialError           confirm_trial() with no trial running
        └── RollbackUnavailableError  nothing to roll back to
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.core.crash import crash_point
from agent.core.durable import atomic_write, fsync_dir, fsync_tree, move_tree, remove_file
from agent.device.store.durable import discard_tree
from agent.device.store.errors import (
    InvalidVersionIdError,
    NoTrialError,
    RollbackUnavailableError,
    StoreCorruptError,
    StoreError,
    StoreIOError,
    StoreLockedError,
    TrialPendingError,
    UnknownVersionError,
    VersionExistsError,
)
from agent.device.store.layout import (
    CURRENT,
    MANIFEST,
    PACKAGE,
    PREVIOUS,
    TRASH_PREFIX,
    TRIAL,
    VERIFIED,
    StoreLayout,
)
from agent.device.store.records import (
    Rollback,
    Trial,
    check_version_id,
    is_rollout_id,
    json_bytes,
    trial_json,
)
from agent.device.store.recovery import RecoveryReport, StoreRecovery

__all__ = [
    "MANIFEST", "PACKAGE", "TRASH_PREFIX", "VERIFIED",
    "InvalidVersionIdError", "ModelStore", "NoTrialError", "RecoveryReport", "Rollback",
    "RollbackUnavailableError", "StoreCorruptError", "StoreError", "StoreIOError",
    "StoreLockedError", "Trial", "TrialPendingError", "UnknownVersionError",
    "VersionExistsError", "check_version_id",
]


@contextmanager
def _io(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise StoreIOError(f"{what}: {err}") from err


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreLockedError(
            f"{path.parent} is owned by another process (pid {owner}); one agent per store"
        ) from err
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class ModelStore:
    """Verified versions of one model slot and the ``current``/``previous`` pointers.

    Holds ``root/lock`` until :meth:`close` (or garbage collection); a second owner,
    in this process or another, gets :class:`StoreLockedError`. Call :meth:`recover`
    once at start, before reading the pointers. Not thread-safe: one owner thread.
    """

    def __init__(self, root: Path, *, keep: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = root
        self.keep = keep
        self._clock = clock
        self._layout = StoreLayout(root)
        with _io(f"opening model store {root}"):
            self._layout.versions.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(root / "lock")
        self._unlock = weakref.finalize(self, os.close, lock_fd)
        self._trial_clock: tuple[str, float] | None = None

    def close(self) -> None:
        self._unlock()

    def __enter__(self) -> ModelStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------

    def current(self) -> str | None:
        return self._layout.pointer(CURRENT)

    def previous(self) -> str | None:
        return self._layout.pointer(PREVIOUS)

    def current_rollout(self) -> str | None:
        """The rollout that promoted the current version (None: none did, or not known)."""
        return self._layout.pointer_rollout(CURRENT)

    def previous_rollout(self) -> str | None:
        """The rollout that promoted the previous version (None: none did, or not known)."""
        return self._layout.pointer_rollout(PREVIOUS)

    def versions(self) -> list[str]:
        """Complete versions, oldest added first."""
        seqs = self._layout.seqs()
        return sorted(seqs, key=seqs.__getitem__)

    def path(self, version_id: str) -> Path:
        """The package directory of a complete version."""
        self._layout.require_complete(version_id)
        return self._layout.package_dir(version_id)

    def manifest(self, version_id: str) -> dict[str, Any]:
        self._layout.require_complete(version_id)
        return self._layout.manifest(version_id)

    def trial(self) -> Trial | None:
        return self._layout.trial()

    def trial_remaining_s(self) -> float | None:
        """Seconds left in the running trial; None if none runs. 0.0 for a trial that this
        store did not start (it survived a restart: :meth:`recover` fails it)."""
        trial = self.trial()
        if trial is None:
            return None
        if self._trial_clock is None or self._trial_clock[0] != trial.version_id:
            return 0.0
        return max(0.0, trial.trial_s - (self._clock() - self._trial_clock[1]))

    def last_rollback(self) -> Rollback | None:
        return self._layout.last_rollback()

    # -- changing ---------------------------------------------------------------

    def add(self, staged_dir: Path, *, version_id: str, manifest: Mapping[str, Any]) -> Path:
        """Move the staged (already verified) package ``staged_dir`` in as ``version_id``;
        returns its new path. ``staged_dir`` should be on the same file system as the store
        (a rename); across file systems it is copied, then deleted."""
        self._check_open()
        check_version_id(version_id)
        layout = self._layout
        if version_id in layout.seqs():
            raise VersionExistsError(f"version {version_id} is already stored")
        if not staged_dir.is_dir():
            raise StoreError(f"{staged_dir}: staged package is not a directory")
        try:
            manifest_bytes = json_bytes(manifest)
        except (TypeError, ValueError) as err:
            raise StoreError(f"manifest of {version_id} is not JSON: {err}") from err
        vdir = layout.version_dir(version_id)
        with _io(f"adding version {version_id}"):
            if vdir.exists():  # left by an add() that died before its marker
                shutil.rmtree(vdir)
            seq = layout.next_number()
            vdir.mkdir()
            try:
                move_tree(staged_dir, vdir / PACKAGE)
            except OSError:
                shutil.rmtree(vdir, ignore_errors=True)
                raise
            crash_point("after-version-copy")
            atomic_write(vdir / MANIFEST, manifest_bytes)
            fsync_tree(vdir / PACKAGE)
            fsync_dir(layout.versions)
            crash_point("before-verified-marker")
            atomic_write(vdir / VERIFIED, json_bytes({"seq": seq}))
        return vdir / PACKAGE

    def promote(self, version_id: str, *, trial_s: float, rollout_id: str | None = None) -> None:
        """Make ``version_id`` current (the old current becomes previous) on trial for
        ``trial_s`` seconds; end the trial with :meth:`confirm_trial` or :meth:`rollback`.
        ``rollout_id`` (the rollout promoting it) is kept in the ``current`` pointer."""
        self._check_open()
        layout = self._layout
        layout.require_complete(version_id)
        if not (math.isfinite(trial_s) and trial_s > 0):
            raise ValueError("trial_s must be a positive, finite number of seconds")
        if rollout_id is not None and not is_rollout_id(rollout_id):
            raise ValueError(f"rollout id {rollout_id!r} is not a protocol name")
        if self.trial() is not None:
            raise TrialPendingError("a trial is running: confirm or roll it back first")
        current, previous = self.current(), self.previous()
        if version_id == current:
            raise StoreError(f"version {version_id} is already current")
        current_rollout, previous_rollout = self.current_rollout(), self.previous_rollout()
        trial = Trial(version_id=version_id, trial_s=trial_s, from_current=current,
                      from_previous=previous, rollout_id=rollout_id,
                      from_current_rollout=current_rollout,
                      from_previous_rollout=previous_rollout)
        with _io(f"promoting {version_id}"):
            atomic_write(self.root / TRIAL, trial_json(trial))
            crash_point("after-trial-marker")
            since = layout.next_number()
            layout.set_pointer(PREVIOUS, current, since, current_rollout)
            layout.set_pointer(CURRENT, version_id, since, rollout_id)
        self._trial_clock = (version_id, self._clock())

    def confirm_trial(self) -> str:
        """The running trial passed; returns the confirmed version."""
        self._check_open()
        trial = self.trial()
        if trial is None:
            raise NoTrialError("no trial is running")
        with _io("confirming the trial"):
            remove_file(self.root / TRIAL)
        self._trial_clock = None
        return trial.version_id

    def rollback(self, reason: str) -> Rollback:
        """Back to the version before: during a trial, exactly the pointers before the
        promotion; otherwise current := previous, previous := the newest complete version
        added before it (or none). The reason is kept in ``last_rollback.json``."""
        self._check_open()
        plan = self._plan_rollback(reason)
        if plan is None:
            raise RollbackUnavailableError("no previous version to roll back to")
        self._execute(plan)
        return plan

    def prune(self) -> list[str]:
        """Delete the oldest complete versions beyond ``keep``, never one the pointers or a
        running trial refer to. Returns the deleted ids."""
        self._check_open()
        layout = self._layout
        seqs = layout.seqs()
        kept = {v for v in layout.referenced() if v is not None}
        for version_id in sorted(seqs, key=seqs.__getitem__, reverse=True):
            if len(kept) >= self.keep:
                break
            kept.add(version_id)
        doomed = [v for v in sorted(seqs, key=seqs.__getitem__) if v not in kept]
        with _io("pruning versions"):
            for version_id in doomed:
                discard_tree(layout.version_dir(version_id),
                             layout.versions / f"{TRASH_PREFIX}{version_id}")
        return doomed

    def recover(self, verify: Callable[[Path], None] | None = None) -> RecoveryReport:
        """Make the store consistent after any crash; call once at start.

        Finishes an interrupted rollback, fails a trial that survived a restart (back to
        the pointers before it), moves ``current`` off a missing or incomplete version,
        or one whose package ``verify`` raises for (to ``previous``, else the newest good
        version added before it, else the newest good one), fixes ``previous`` likewise
        (the newest good version added before current), and deletes incomplete versions
        and leftover temp and trash files.
        """
        self._check_open()
        with _io("recovering the model store"):
            report = StoreRecovery(self._layout, verify, self._execute).run()
        self._trial_clock = None  # recovery ends every trial it finds
        return report

    # -- internals ----------------------------------------------------------------

    def _pointer_rollout(self, name: str) -> str | None:
        """The rollout id kept in the pointer file ``name``."""
        return self._layout.pointer_rollout(name)

    def _check_open(self) -> None:
        if not self._unlock.alive:
            raise StoreError(f"model store {self.root} is closed")

    def _plan_rollback(self, reason: str) -> Rollback | None:
        trial = self.trial()
        current = self.current()
        if trial is not None:
            return Rollback(from_version=trial.version_id, to_version=trial.from_current,
                            previous=trial.from_previous, reason=reason,
                            to_rollout=trial.from_current_rollout,
                            previous_rollout=trial.from_previous_rollout)
        target = self.previous()
        if target is None:
            return None
        exclude = frozenset({current} if current is not None else ())
        return Rollback(from_version=current, to_version=target, reason=reason,
                        previous=self._layout.newest_before(target, exclude=exclude),
                        to_rollout=self.previous_rollout())

    def _execute(self, plan: Rollback) -> None:
        """Journal ``plan`` (redo intent), then apply it."""
        with _io("rolling back"):
            self._layout.write_rollback_intent(plan)
            crash_point("after-rollback-intent")
            self._layout.apply_rollback(plan)
            self._trial_clock = None
