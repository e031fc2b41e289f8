"""The on-disk store of verified model versions for one model slot.

Layout under ``root``::

    lock                  advisory flock: one owning process at a time
    current               {"version_id": "v3", "since": 12, "rollout_id": "r-7"}
                          (absent: no model yet)
    previous              {"version_id": "v2", "since": 12}  (absent: nothing to go back to)
    trial                 {"version_id": "v3", "trial_s": 600.0, "rollout_id": "r-7",
                           "from_current": "v2", "from_previous": "v1"}  while v3 is on trial
    rollback              a rollback in progress (redo intent; recovery finishes it)
    last_rollback.json    {"from": "v3", "to": "v2", "previous": "v1", "reason": ..., "since": 13}
    versions/<id>/
        package/          the staged package directory, moved in whole
        manifest.json     the manifest given to add()
        VERIFIED          {"seq": 10}, written and fsynced last: without it the version is
                          incomplete and recovery deletes it
    versions/.trash-<id>  a version being deleted

``since`` and ``seq`` come from one counter kept on disk (1 + the largest number
found), never from a clock: a Raspberry Pi has no RTC. A trial's deadline is a
duration counted on this process's monotonic clock; a restart during a trial
fails the trial.

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

Errors::

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
import json
import math
import os
import re
import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from agent.core.crash import crash_point
from agent.core.durable import atomic_write
from agent.core.errors import AgentError
from agent.device.store.durable import (
    discard_tree,
    fsync_dir,
    fsync_tree,
    move_tree,
    remove_file,
    switch_pointer,
)

PACKAGE = "package"
MANIFEST = "manifest.json"
VERIFIED = "VERIFIED"
TRASH_PREFIX = ".trash-"
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_ROLLOUT_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")  # the protocol's name characters


class StoreError(AgentError):
    code: ClassVar[str] = "store"


class StoreLockedError(StoreError):
    code = "store_locked"


class StoreCorruptError(StoreError):
    code = "store_corrupt"


class StoreIOError(StoreError):
    code = "store_io"


class InvalidVersionIdError(StoreError):
    code = "invalid_version_id"


class VersionExistsError(StoreError):
    code = "version_exists"


class UnknownVersionError(StoreError):
    code = "unknown_version"


class TrialPendingError(StoreError):
    code = "trial_pending"


class NoTrialError(StoreError):
    code = "no_trial"


class RollbackUnavailableError(StoreError):
    code = "rollback_unavailable"


@dataclass(frozen=True)
class Trial:
    """A promoted version that is not confirmed yet, and the pointers to restore if it fails."""

    version_id: str
    trial_s: float
    from_current: str | None
    from_previous: str | None
    rollout_id: str | None = None  # the rollout that promoted ``version_id``
    from_current_rollout: str | None = None
    from_previous_rollout: str | None = None


@dataclass(frozen=True)
class Rollback:
    """One rollback: planned (the redo intent) or done (``last_rollback.json``)."""

    from_version: str | None
    to_version: str | None
    previous: str | None
    reason: str
    to_rollout: str | None = None  # the rollout ids the two pointers get
    previous_rollout: str | None = None


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`ModelStore.recover` did; ``reason`` is None when nothing needed fixing."""

    current: str | None
    previous: str | None
    rolled_back_from: str | None
    reason: str | None
    removed: tuple[str, ...]


def check_version_id(version_id: str) -> None:
    if not _VERSION_ID.fullmatch(version_id):
        raise InvalidVersionIdError(f"version id {version_id!r} is not a safe directory name")


@contextmanager
def _io(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise StoreIOError(f"{what}: {err}") from err


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(obj), sort_keys=True, indent=1).encode()


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if absent; StoreCorruptError if unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreCorruptError(f"{path}: {err}") from err
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreCorruptError(f"{path}: {err}") from err
    if not isinstance(obj, dict):
        raise StoreCorruptError(f"{path}: not a JSON object")
    return obj


def _optional_name(obj: Mapping[str, Any], key: str, path: Path, pattern: re.Pattern[str],
                   what: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise StoreCorruptError(f"{path}: {key} {value!r} is not a {what}")
    return value


def _optional_id(obj: Mapping[str, Any], key: str, path: Path) -> str | None:
    return _optional_name(obj, key, path, _VERSION_ID, "version id")


def _optional_rollout(obj: Mapping[str, Any], key: str, path: Path) -> str | None:
    return _optional_name(obj, key, path, _ROLLOUT_ID, "rollout id")


def _with_rollouts(record: dict[str, Any], **rollouts: str | None) -> dict[str, Any]:
    """``record`` plus the rollout ids that are known: an unknown one is left out, so files
    written without rollouts read the same as before."""
    record.update({key: value for key, value in rollouts.items() if value is not None})
    return record


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
        self._versions = root / "versions"
        with _io(f"opening model store {root}"):
            self._versions.mkdir(parents=True, exist_ok=True)
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
        return self._pointer("current")

    def previous(self) -> str | None:
        return self._pointer("previous")

    def current_rollout(self) -> str | None:
        """The rollout that promoted the current version (None: none did, or not known)."""
        return self._pointer_rollout("current")

    def versions(self) -> list[str]:
        """Complete versions, oldest added first."""
        seqs = self._seqs()
        return sorted(seqs, key=seqs.__getitem__)

    def path(self, version_id: str) -> Path:
        """The package directory of a complete version."""
        self._require_complete(version_id)
        return self._versions / version_id / PACKAGE

    def manifest(self, version_id: str) -> dict[str, Any]:
        self._require_complete(version_id)
        manifest = _read_json(self._versions / version_id / MANIFEST)
        if manifest is None:
            raise StoreCorruptError(f"version {version_id} has no {MANIFEST}")
        return manifest

    def trial(self) -> Trial | None:
        path = self.root / "trial"
        obj = _read_json(path)
        if obj is None:
            return None
        version_id = _optional_id(obj, "version_id", path)
        trial_s = obj.get("trial_s")
        if version_id is None or not isinstance(trial_s, (int, float)):
            raise StoreCorruptError(f"{path}: missing version_id or trial_s")
        return Trial(version_id=version_id, trial_s=float(trial_s),
                     from_current=_optional_id(obj, "from_current", path),
                     from_previous=_optional_id(obj, "from_previous", path),
                     rollout_id=_optional_rollout(obj, "rollout_id", path),
                     from_current_rollout=_optional_rollout(obj, "from_current_rollout", path),
                     from_previous_rollout=_optional_rollout(obj, "from_previous_rollout",
                                                             path))

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
        path = self.root / "last_rollback.json"
        obj = _read_json(path)
        return None if obj is None else self._rollback_from_json(obj, path)

    # -- changing ---------------------------------------------------------------

    def add(self, staged_dir: Path, *, version_id: str, manifest: Mapping[str, Any]) -> Path:
        """Move the staged (already verified) package ``staged_dir`` in as ``version_id``;
        returns its new path. ``staged_dir`` should be on the same file system as the store
        (a rename); across file systems it is copied, then deleted."""
        self._check_open()
        check_version_id(version_id)
        if version_id in self._seqs():
            raise VersionExistsError(f"version {version_id} is already stored")
        if not staged_dir.is_dir():
            raise StoreError(f"{staged_dir}: staged package is not a directory")
        try:
            manifest_bytes = _json_bytes(manifest)
        except (TypeError, ValueError) as err:
            raise StoreError(f"manifest of {version_id} is not JSON: {err}") from err
        vdir = self._versions / version_id
        with _io(f"adding version {version_id}"):
            if vdir.exists():  # left by an add() that died before its marker
                shutil.rmtree(vdir)
            seq = self._next_number()
            vdir.mkdir()
            try:
                move_tree(staged_dir, vdir / PACKAGE)
            except OSError:
                shutil.rmtree(vdir, ignore_errors=True)
                raise
            crash_point("after-version-copy")
            atomic_write(vdir / MANIFEST, manifest_bytes)
            fsync_tree(vdir / PACKAGE)
            fsync_dir(self._versions)
            crash_point("before-verified-marker")
            atomic_write(vdir / VERIFIED, _json_bytes({"seq": seq}))
        return vdir / PACKAGE

    def promote(self, version_id: str, *, trial_s: float, rollout_id: str | None = None) -> None:
        """Make ``version_id`` current (the old current becomes previous) on trial for
        ``trial_s`` seconds; end the trial with :meth:`confirm_trial` or :meth:`rollback`.
        ``rollout_id`` (the rollout promoting it) is kept in the ``current`` pointer."""
        self._check_open()
        self._require_complete(version_id)
        if not (math.isfinite(trial_s) and trial_s > 0):
            raise ValueError("trial_s must be a positive, finite number of seconds")
        if rollout_id is not None and not _ROLLOUT_ID.fullmatch(rollout_id):
            raise ValueError(f"rollout id {rollout_id!r} is not a protocol name")
        if self.trial() is not None:
            raise TrialPendingError("a trial is running: confirm or roll it back first")
        current, previous = self.current(), self.previous()
        if version_id == current:
            raise StoreError(f"version {version_id} is already current")
        current_rollout, previous_rollout = self.current_rollout(), self._pointer_rollout(
            "previous")
        record = _with_rollouts({"version_id": version_id, "trial_s": trial_s,
                                 "from_current": current, "from_previous": previous},
                                rollout_id=rollout_id, from_current_rollout=current_rollout,
                                from_previous_rollout=previous_rollout)
        with _io(f"promoting {version_id}"):
            atomic_write(self.root / "trial", _json_bytes(record))
            crash_point("after-trial-marker")
            since = self._next_number()
            self._set_pointer("previous", current, since, current_rollout)
            self._set_pointer("current", version_id, since, rollout_id)
        self._trial_clock = (version_id, self._clock())

    def confirm_trial(self) -> str:
        """The running trial passed; returns the confirmed version."""
        self._check_open()
        trial = self.trial()
        if trial is None:
            raise NoTrialError("no trial is running")
        with _io("confirming the trial"):
            remove_file(self.root / "trial")
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
        seqs = self._seqs()
        kept = {v for v in self._referenced() if v is not None}
        for version_id in sorted(seqs, key=seqs.__getitem__, reverse=True):
            if len(kept) >= self.keep:
                break
            kept.add(version_id)
        doomed = [v for v in sorted(seqs, key=seqs.__getitem__) if v not in kept]
        with _io("pruning versions"):
            for version_id in doomed:
                discard_tree(self._versions / version_id,
                             self._versions / f"{TRASH_PREFIX}{version_id}")
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
        from agent.device.store.recovery import StoreRecovery  # it imports this module

        self._check_open()
        with _io("recovering the model store"):
            return StoreRecovery(self, verify).run()

    # -- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._unlock.alive:
            raise StoreError(f"model store {self.root} is closed")

    def _pointer(self, name: str) -> str | None:
        path = self.root / name
        obj = _read_json(path)
        return None if obj is None else _optional_id(obj, "version_id", path)

    def _pointer_rollout(self, name: str) -> str | None:
        path = self.root / name
        obj = _read_json(path)
        return None if obj is None else _optional_rollout(obj, "rollout_id", path)

    def _pointer_since(self, name: str) -> int:
        try:
            obj = _read_json(self.root / name)
        except StoreCorruptError:
            return 0
        since = None if obj is None else obj.get("since")
        return since if isinstance(since, int) else 0

    def _set_pointer(self, name: str, version_id: str | None, since: int,
                     rollout_id: str | None = None) -> None:
        if version_id is None:
            remove_file(self.root / name)
        elif self._record_or_none(name) != (version_id, rollout_id):
            switch_pointer(self.root / name, _json_bytes(_with_rollouts(
                {"version_id": version_id, "since": since}, rollout_id=rollout_id)))

    def _pointer_or_none(self, name: str) -> str | None:
        try:
            return self._pointer(name)
        except StoreCorruptError:
            return None

    def _record_or_none(self, name: str) -> tuple[str | None, str | None] | None:
        """(version id, rollout id) of a pointer; None if it is unreadable."""
        try:
            return self._pointer(name), self._pointer_rollout(name)
        except StoreCorruptError:
            return None

    def _rollout_or_none(self, name: str) -> str | None:
        record = self._record_or_none(name)
        return None if record is None else record[1]

    def _seq(self, version_id: str) -> int | None:
        try:
            obj = _read_json(self._versions / version_id / VERIFIED)
        except StoreCorruptError:
            return None
        seq = None if obj is None else obj.get("seq")
        return seq if isinstance(seq, int) else None

    def _seqs(self) -> dict[str, int]:
        """Complete versions (a readable VERIFIED marker) and their add order."""
        seqs: dict[str, int] = {}
        for entry in self._versions.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            seq = self._seq(entry.name)
            if seq is not None:
                seqs[entry.name] = seq
        return seqs

    def _require_complete(self, version_id: str) -> None:
        check_version_id(version_id)
        if self._seq(version_id) is None:
            raise UnknownVersionError(f"no complete version {version_id} in {self.root}")

    def _next_number(self) -> int:
        numbers = [*self._seqs().values(), self._pointer_since("current"),
                   self._pointer_since("previous"), self._pointer_since("last_rollback.json")]
        return max(numbers, default=0) + 1

    def _referenced(self) -> set[str | None]:
        refs: set[str | None] = {self._pointer_or_none("current"),
                                 self._pointer_or_none("previous")}
        trial = self.trial()
        if trial is not None:
            refs |= {trial.version_id, trial.from_current, trial.from_previous}
        return refs

    def _newest_before(self, version_id: str | None, *,
                      usable: Callable[[str], bool] | None = None,
                      exclude: frozenset[str] = frozenset()) -> str | None:
        """The newest complete version added before ``version_id`` (any, if None) that is
        not excluded and passes ``usable``."""
        seqs = self._seqs()
        limit = seqs.get(version_id) if version_id is not None else None
        for candidate in sorted(seqs, key=seqs.__getitem__, reverse=True):
            if candidate == version_id or candidate in exclude:
                continue
            if limit is not None and seqs[candidate] >= limit:
                continue
            if usable is None or usable(candidate):
                return candidate
        return None

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
                        previous=self._newest_before(target, exclude=exclude),
                        to_rollout=self._pointer_rollout("previous"))

    def _execute(self, plan: Rollback) -> None:
        """Journal ``plan`` (redo intent), then apply it."""
        with _io("rolling back"):
            atomic_write(self.root / "rollback", self._rollback_json(plan))
            crash_point("after-rollback-intent")
            self._apply(plan)

    def _apply(self, plan: Rollback) -> None:
        since = self._next_number()
        self._set_pointer("current", plan.to_version, since, plan.to_rollout)
        self._set_pointer("previous", plan.previous, since, plan.previous_rollout)
        atomic_write(self.root / "last_rollback.json", self._rollback_json(plan, since))
        remove_file(self.root / "trial")
        remove_file(self.root / "rollback")
        self._trial_clock = None

    @staticmethod
    def _rollback_json(plan: Rollback, since: int | None = None) -> bytes:
        record = _with_rollouts({"from": plan.from_version, "to": plan.to_version,
                                 "previous": plan.previous, "reason": plan.reason},
                                to_rollout=plan.to_rollout,
                                previous_rollout=plan.previous_rollout)
        if since is not None:
            record["since"] = since
        return _json_bytes(record)

    @staticmethod
    def _rollback_from_json(obj: Mapping[str, Any], path: Path) -> Rollback:
        reason = obj.get("reason")
        if not isinstance(reason, str):
            raise StoreCorruptError(f"{path}: no reason")
        return Rollback(from_version=_optional_id(obj, "from", path),
                        to_version=_optional_id(obj, "to", path),
                        previous=_optional_id(obj, "previous", path), reason=reason,
                        to_rollout=_optional_rollout(obj, "to_rollout", path),
                        previous_rollout=_optional_rollout(obj, "previous_rollout", path))
