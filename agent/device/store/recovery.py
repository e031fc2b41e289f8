"""Recovery of a :class:`~agent.device.store.store.ModelStore` after a crash: one run of
:meth:`ModelStore.recover <agent.device.store.store.ModelStore.recover>`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from agent.device.store.durable import TMP_SUFFIX, remove_file
from agent.device.store.store import (
    PACKAGE,
    TRASH_PREFIX,
    VERIFIED,
    ModelStore,
    RecoveryReport,
    Rollback,
    StoreCorruptError,
    _read_json,
)


class StoreRecovery:
    """One run of :meth:`ModelStore.recover`; caches ``verify`` results."""

    def __init__(self, store: ModelStore, verify: Callable[[Path], None] | None) -> None:
        self.store = store
        self.verify = verify
        self.problems: dict[str, str | None] = {}
        self.removed: list[str] = []
        self.reasons: list[str] = []
        self.rolled_back_from: str | None = None

    def run(self) -> RecoveryReport:
        store = self.store
        self._sweep_temp()
        self._finish_journals()
        self._fix_current()
        self._fix_previous()
        self._sweep_incomplete()
        return RecoveryReport(current=store.current(), previous=store.previous(),
                              rolled_back_from=self.rolled_back_from,
                              reason="; ".join(self.reasons) or None,
                              removed=tuple(self.removed))

    def problem(self, version_id: str) -> str | None:
        """Why ``version_id`` must not serve, or None if it may."""
        if version_id not in self.problems:
            self.problems[version_id] = self._check(version_id)
        return self.problems[version_id]

    def _check(self, version_id: str) -> str | None:
        vdir = self.store.root / "versions" / version_id
        if not vdir.is_dir():
            return "missing"
        if self.store._seq(version_id) is None:
            return f"incomplete (no {VERIFIED} marker)"
        if self.verify is not None:
            try:
                self.verify(vdir / PACKAGE)
            except Exception as err:  # any failure of the check means: do not serve it
                return f"failed verification: {err}"
        return None

    def _usable(self, version_id: str) -> bool:
        return self.problem(version_id) is None

    def _finish_journals(self) -> None:
        store = self.store
        intent_path = store.root / "rollback"
        try:
            intent = _read_json(intent_path)
            plan = None if intent is None else store._rollback_from_json(intent, intent_path)
        except StoreCorruptError as err:
            self._discard(intent_path, f"unreadable rollback intent ({err})")
            plan = None
        if plan is not None:
            store._apply(plan)
            self.rolled_back_from = plan.from_version
            self.reasons.append(f"finished an interrupted rollback from {plan.from_version} "
                                f"to {plan.to_version}: {plan.reason}")
            return
        try:
            trial = store.trial()
        except StoreCorruptError as err:
            self._discard(store.root / "trial", f"unreadable trial marker ({err})")
            return
        if trial is None:
            return
        if store._pointer_or_none("current") == trial.version_id:
            reason = f"restarted during trial of {trial.version_id}"
            store._execute(Rollback(from_version=trial.version_id, reason=reason,
                                    to_version=trial.from_current,
                                    previous=trial.from_previous,
                                    to_rollout=trial.from_current_rollout,
                                    previous_rollout=trial.from_previous_rollout))
            self.rolled_back_from = trial.version_id
            self.reasons.append(reason)
        else:  # died inside promote(), before current moved: undo the rest
            since = store._next_number()
            store._set_pointer("previous", trial.from_previous, since,
                               trial.from_previous_rollout)
            remove_file(store.root / "trial")
            self.reasons.append(f"promotion of {trial.version_id} did not complete")

    def _fix_current(self) -> None:
        store = self.store
        try:
            current = store.current()
            problem = None if current is None else self.problem(current)
        except StoreCorruptError as err:
            current, problem = None, f"unreadable ({err})"
        if problem is None:
            return
        failed = frozenset({current} if current is not None else ())
        previous = store._pointer_or_none("previous")
        target_rollout = None  # a version found by search: which rollout promoted it is lost
        if previous is not None and previous not in failed and self._usable(previous):
            target: str | None = previous
            target_rollout = store._rollout_or_none("previous")
        else:  # a version served before the failed one (it passed its trial) beats a newer one
            target = (store._newest_before(current, usable=self._usable, exclude=failed)
                      or store._newest_before(None, usable=self._usable, exclude=failed))
        reason = (f"current version {current} is {problem}; "
                  f"{'fell back to ' + target if target else 'no usable version left'}")
        new_previous = (None if target is None else
                        store._newest_before(target, usable=self._usable, exclude=failed))
        store._execute(Rollback(from_version=current, to_version=target,
                                previous=new_previous, reason=reason,
                                to_rollout=target_rollout))
        self.rolled_back_from = self.rolled_back_from or current
        self.reasons.append(reason)

    def _fix_previous(self) -> None:
        store = self.store
        current = store.current()
        try:
            previous = store.previous()
            problem = None if previous is None else self.problem(previous)
        except StoreCorruptError as err:
            previous, problem = None, f"unreadable ({err})"
        if problem is None and (previous is None or previous != current):
            return
        exclude = frozenset(v for v in (previous, current) if v is not None)
        replacement = store._newest_before(current, usable=self._usable, exclude=exclude)
        store._set_pointer("previous", replacement, store._next_number())
        if previous is not None and previous != current:
            self.reasons.append(f"previous version {previous} is {problem}; "
                                f"previous is now {replacement}")

    def _sweep_temp(self) -> None:
        root = self.store.root
        for entry in [*root.iterdir(), *(root / "versions").iterdir()]:
            if entry.name.startswith(TRASH_PREFIX) or (
                    entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
                self._remove(entry)
        for vdir in (root / "versions").iterdir():
            if vdir.is_dir() and not vdir.name.startswith("."):
                for entry in vdir.iterdir():
                    if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
                        self._remove(entry)

    def _sweep_incomplete(self) -> None:
        versions = self.store.root / "versions"
        for vdir in versions.iterdir():
            if vdir.is_dir() and self.store._seq(vdir.name) is None:
                self._remove(vdir)

    def _remove(self, entry: Path) -> None:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        self.removed.append(str(entry.relative_to(self.store.root)))

    def _discard(self, path: Path, why: str) -> None:
        remove_file(path)
        self.removed.append(str(path.relative_to(self.store.root)))
        self.reasons.append(why)
