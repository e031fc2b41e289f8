"""Recovery of a model store after a crash: one run of
:meth:`ModelStore.recover <agent.device.store.store.ModelStore.recover>`.

``trial`` is the undo record of a promotion (recovery restores the pointers it
names); ``rollback`` is the redo record of a rollback (recovery completes it).
Recovery works on the store's files through :class:`StoreLayout`; the rollbacks it
decides on go through the store's own journaled rollback, given as ``roll_back``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.core.durable import TMP_SUFFIX, remove_file
from agent.device.store.errors import StoreCorruptError
from agent.device.store.layout import (
    CURRENT,
    PREVIOUS,
    ROLLBACK,
    TRASH_PREFIX,
    TRIAL,
    VERIFIED,
    StoreLayout,
)
from agent.device.store.records import Rollback


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`ModelStore.recover` did; ``reason`` is None when nothing needed fixing."""

    current: str | None
    previous: str | None
    rolled_back_from: str | None
    reason: str | None
    removed: tuple[str, ...]


class StoreRecovery:
    """One run of :meth:`ModelStore.recover`; caches ``verify`` results.

    ``roll_back`` journals a rollback and applies it (the store's rollback, with its
    crash points); an interrupted one found on disk is finished through the layout.
    """

    def __init__(self, layout: StoreLayout, verify: Callable[[Path], None] | None,
                 roll_back: Callable[[Rollback], None]) -> None:
        self.layout = layout
        self.verify = verify
        self.roll_back = roll_back
        self.problems: dict[str, str | None] = {}
        self.removed: list[str] = []
        self.reasons: list[str] = []
        self.rolled_back_from: str | None = None

    def run(self) -> RecoveryReport:
        layout = self.layout
        self._sweep_temp()
        self._finish_journals()
        self._fix_current()
        self._fix_previous()
        self._sweep_incomplete()
        return RecoveryReport(current=layout.pointer(CURRENT), previous=layout.pointer(PREVIOUS),
                              rolled_back_from=self.rolled_back_from,
                              reason="; ".join(self.reasons) or None,
                              removed=tuple(self.removed))

    def problem(self, version_id: str) -> str | None:
        """Why ``version_id`` must not serve, or None if it may."""
        if version_id not in self.problems:
            self.problems[version_id] = self._check(version_id)
        return self.problems[version_id]

    def _check(self, version_id: str) -> str | None:
        if not self.layout.version_dir(version_id).is_dir():
            return "missing"
        if self.layout.seq(version_id) is None:
            return f"incomplete (no {VERIFIED} marker)"
        if self.verify is not None:
            try:
                self.verify(self.layout.package_dir(version_id))
            except Exception as err:  # any failure of the check means: do not serve it
                return f"failed verification: {err}"
        return None

    def _usable(self, version_id: str) -> bool:
        return self.problem(version_id) is None

    def _finish_journals(self) -> None:
        layout = self.layout
        try:
            plan = layout.rollback_intent()
        except StoreCorruptError as err:
            self._discard(layout.root / ROLLBACK, f"unreadable rollback intent ({err})")
            plan = None
        if plan is not None:
            layout.apply_rollback(plan)
            self.rolled_back_from = plan.from_version
            self.reasons.append(f"finished an interrupted rollback from {plan.from_version} "
                                f"to {plan.to_version}: {plan.reason}")
            return
        try:
            trial = layout.trial()
        except StoreCorruptError as err:
            self._discard(layout.root / TRIAL, f"unreadable trial marker ({err})")
            return
        if trial is None:
            return
        if layout.pointer_or_none(CURRENT) == trial.version_id:
            reason = f"restarted during trial of {trial.version_id}"
            self.roll_back(Rollback(from_version=trial.version_id, reason=reason,
                                    to_version=trial.from_current,
                                    previous=trial.from_previous,
                                    to_rollout=trial.from_current_rollout,
                                    previous_rollout=trial.from_previous_rollout))
            self.rolled_back_from = trial.version_id
            self.reasons.append(reason)
        else:  # died inside promote(), before current moved: undo the rest
            since = layout.next_number()
            layout.set_pointer(PREVIOUS, trial.from_previous, since,
                               trial.from_previous_rollout)
            remove_file(layout.root / TRIAL)
            self.reasons.append(f"promotion of {trial.version_id} did not complete")

    def _fix_current(self) -> None:
        layout = self.layout
        try:
            current = layout.pointer(CURRENT)
            problem = None if current is None else self.problem(current)
        except StoreCorruptError as err:
            current, problem = None, f"unreadable ({err})"
        if problem is None:
            return
        failed = frozenset({current} if current is not None else ())
        previous = layout.pointer_or_none(PREVIOUS)
        target_rollout = None  # a version found by search: which rollout promoted it is lost
        if previous is not None and previous not in failed and self._usable(previous):
            target: str | None = previous
            target_rollout = layout.rollout_or_none(PREVIOUS)
        else:  # a version served before the failed one (it passed its trial) beats a newer one
            target = (layout.newest_before(current, usable=self._usable, exclude=failed)
                      or layout.newest_before(None, usable=self._usable, exclude=failed))
        reason = (f"current version {current} is {problem}; "
                  f"{'fell back to ' + target if target else 'no usable version left'}")
        new_previous = (None if target is None else
                        layout.newest_before(target, usable=self._usable, exclude=failed))
        self.roll_back(Rollback(from_version=current, to_version=target,
                                previous=new_previous, reason=reason,
                                to_rollout=target_rollout))
        self.rolled_back_from = self.rolled_back_from or current
        self.reasons.append(reason)

    def _fix_previous(self) -> None:
        layout = self.layout
        current = layout.pointer(CURRENT)
        try:
            previous = layout.pointer(PREVIOUS)
            problem = None if previous is None else self.problem(previous)
        except StoreCorruptError as err:
            previous, problem = None, f"unreadable ({err})"
        if problem is None and (previous is None or previous != current):
            return
        exclude = frozenset(v for v in (previous, current) if v is not None)
        replacement = layout.newest_before(current, usable=self._usable, exclude=exclude)
        layout.set_pointer(PREVIOUS, replacement, layout.next_number())
        if previous is not None and previous != current:
            self.reasons.append(f"previous version {previous} is {problem}; "
                                f"previous is now {replacement}")

    def _sweep_temp(self) -> None:
        layout = self.layout
        for entry in [*layout.root.iterdir(), *layout.versions.iterdir()]:
            if entry.name.startswith(TRASH_PREFIX) or (
                    entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
                self._remove(entry)
        for vdir in layout.versions.iterdir():
            if vdir.is_dir() and not vdir.name.startswith("."):
                for entry in vdir.iterdir():
                    if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
                        self._remove(entry)

    def _sweep_incomplete(self) -> None:
        for vdir in self.layout.versions.iterdir():
            if vdir.is_dir() and self.layout.seq(vdir.name) is None:
                self._remove(vdir)

    def _remove(self, entry: Path) -> None:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        self.removed.append(str(entry.relative_to(self.layout.root)))

    def _discard(self, path: Path, why: str) -> None:
        remove_file(path)
        self.removed.append(str(path.relative_to(self.layout.root)))
        self.reasons.append(why)
