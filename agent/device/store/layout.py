"""The files of one model store and what they say.

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
found), never from a clock: a Raspberry Pi has no RTC.

:class:`StoreLayout` reads these files and writes the pointers and the rollback
records; it takes no lock and keeps no state of its own, so the store and its
recovery see the same files through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.durable import atomic_write, remove_file
from agent.device.store.durable import switch_pointer
from agent.device.store.errors import StoreCorruptError, UnknownVersionError
from agent.device.store.records import (
    Rollback,
    Trial,
    check_version_id,
    optional_id,
    optional_rollout,
    pointer_json,
    read_json,
    rollback_from_json,
    rollback_json,
    trial_from_json,
)

PACKAGE = "package"
MANIFEST = "manifest.json"
VERIFIED = "VERIFIED"
TRASH_PREFIX = ".trash-"
VERSIONS = "versions"
CURRENT = "current"  # the two pointers
PREVIOUS = "previous"
TRIAL = "trial"  # the undo record of a promotion
ROLLBACK = "rollback"  # the redo record of a rollback
LAST_ROLLBACK = "last_rollback.json"


class StoreLayout:
    """The pointers, records and versions under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / VERSIONS

    def version_dir(self, version_id: str) -> Path:
        return self.versions / version_id

    def package_dir(self, version_id: str) -> Path:
        return self.versions / version_id / PACKAGE

    # -- pointers -----------------------------------------------------------------

    def pointer(self, name: str) -> str | None:
        """The version the pointer ``name`` names (None: absent); StoreCorruptError if
        it is unreadable."""
        path = self.root / name
        obj = read_json(path)
        return None if obj is None else optional_id(obj, "version_id", path)

    def pointer_rollout(self, name: str) -> str | None:
        """The rollout that set the pointer ``name`` (None: none did, or not known)."""
        path = self.root / name
        obj = read_json(path)
        return None if obj is None else optional_rollout(obj, "rollout_id", path)

    def pointer_or_none(self, name: str) -> str | None:
        """:meth:`pointer`, None if it is unreadable."""
        try:
            return self.pointer(name)
        except StoreCorruptError:
            return None

    def rollout_or_none(self, name: str) -> str | None:
        """:meth:`pointer_rollout`, None if the pointer is unreadable."""
        record = self._record_or_none(name)
        return None if record is None else record[1]

    def set_pointer(self, name: str, version_id: str | None, since: int,
                    rollout_id: str | None = None) -> None:
        """Point ``name`` at ``version_id`` (remove it for None); a pointer that already
        says this is left as it is."""
        if version_id is None:
            remove_file(self.root / name)
        elif self._record_or_none(name) != (version_id, rollout_id):
            switch_pointer(self.root / name, pointer_json(version_id, since, rollout_id))

    def _record_or_none(self, name: str) -> tuple[str | None, str | None] | None:
        """(version id, rollout id) of a pointer; None if it is unreadable."""
        try:
            return self.pointer(name), self.pointer_rollout(name)
        except StoreCorruptError:
            return None

    def _since(self, name: str) -> int:
        try:
            obj = read_json(self.root / name)
        except StoreCorruptError:
            return 0
        since = None if obj is None else obj.get("since")
        return since if isinstance(since, int) else 0

    # -- versions -------------------------------------------------------------------

    def seq(self, version_id: str) -> int | None:
        """The add order of a complete version; None if it is missing or incomplete."""
        try:
            obj = read_json(self.versions / version_id / VERIFIED)
        except StoreCorruptError:
            return None
        seq = None if obj is None else obj.get("seq")
        return seq if isinstance(seq, int) else None

    def seqs(self) -> dict[str, int]:
        """Complete versions (a readable VERIFIED marker) and their add order."""
        seqs: dict[str, int] = {}
        for entry in self.versions.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            seq = self.seq(entry.name)
            if seq is not None:
                seqs[entry.name] = seq
        return seqs

    def require_complete(self, version_id: str) -> None:
        check_version_id(version_id)
        if self.seq(version_id) is None:
            raise UnknownVersionError(f"no complete version {version_id} in {self.root}")

    def manifest(self, version_id: str) -> dict[str, Any]:
        """The manifest kept with a version (which must be complete)."""
        manifest = read_json(self.versions / version_id / MANIFEST)
        if manifest is None:
            raise StoreCorruptError(f"version {version_id} has no {MANIFEST}")
        return manifest

    def next_number(self) -> int:
        """The next ``seq`` or ``since``: 1 + the largest one on disk."""
        numbers = [*self.seqs().values(), self._since(CURRENT), self._since(PREVIOUS),
                   self._since(LAST_ROLLBACK)]
        return max(numbers, default=0) + 1

    def referenced(self) -> set[str | None]:
        """The versions the pointers and a running trial name."""
        refs: set[str | None] = {self.pointer_or_none(CURRENT), self.pointer_or_none(PREVIOUS)}
        trial = self.trial()
        if trial is not None:
            refs |= {trial.version_id, trial.from_current, trial.from_previous}
        return refs

    def newest_before(self, version_id: str | None, *,
                      usable: Callable[[str], bool] | None = None,
                      exclude: frozenset[str] = frozenset()) -> str | None:
        """The newest complete version added before ``version_id`` (any, if None) that is
        not excluded and passes ``usable``."""
        seqs = self.seqs()
        limit = seqs.get(version_id) if version_id is not None else None
        for candidate in sorted(seqs, key=seqs.__getitem__, reverse=True):
            if candidate == version_id or candidate in exclude:
                continue
            if limit is not None and seqs[candidate] >= limit:
                continue
            if usable is None or usable(candidate):
                return candidate
        return None

    # -- the trial and rollback records ----------------------------------------------

    def trial(self) -> Trial | None:
        path = self.root / TRIAL
        obj = read_json(path)
        return None if obj is None else trial_from_json(obj, path)

    def rollback_intent(self) -> Rollback | None:
        """The rollback that was journaled and not finished, if any."""
        path = self.root / ROLLBACK
        obj = read_json(path)
        return None if obj is None else rollback_from_json(obj, path)

    def last_rollback(self) -> Rollback | None:
        path = self.root / LAST_ROLLBACK
        obj = read_json(path)
        return None if obj is None else rollback_from_json(obj, path)

    def write_rollback_intent(self, plan: Rollback) -> None:
        atomic_write(self.root / ROLLBACK, rollback_json(plan))

    def apply_rollback(self, plan: Rollback) -> None:
        """Set the pointers ``plan`` names, record it as the last rollback and drop the
        trial and the intent: each step may be repeated after a crash."""
        since = self.next_number()
        self.set_pointer(CURRENT, plan.to_version, since, plan.to_rollout)
        self.set_pointer(PREVIOUS, plan.previous, since, plan.previous_rollout)
        atomic_write(self.root / LAST_ROLLBACK, rollback_json(plan, since))
        remove_file(self.root / TRIAL)
        remove_file(self.root / ROLLBACK)
