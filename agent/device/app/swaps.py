"""Model swaps on a running device: stage, shadow, weights, promote, confirm, rollback,
trials and local guardrails, driven by signed commands.

Slow work (download, verification, golden vectors in a child, loading) runs on
the command thread, never on the inference thread; a model change is a plan
switch that lands between two inferences. The store's ``current`` pointer moves
only on promote (on trial) and is confirmed when the trial passes or the
promoting rollout sends ``confirm``; a restart during a trial comes back on the
model before it.

Every change is owned by the rollout that made it: the candidate by the rollout
that staged it, the trial by the one that promoted it, and the store's current
version by the rollout recorded with it (which survives restarts). ``confirm``
and ``rollback`` act only on what their own rollout owns, so a rollback sent for
a rollout whose stage this device refused changes nothing, rather than undoing
the earlier rollout that put the serving model there. While a promoted model is
on trial, a ``stage`` of any rollout is refused (ack code ``on_trial``) before
anything is fetched. A local guardrail rollback is not scoped: it undoes
whatever is newest.

Commands run on the command thread and :meth:`SwapController.tick` on the main
thread; one lock keeps their changes of the trial, the candidate and the store
apart (a ``confirm`` may well arrive as the trial's time runs out). A stage holds
it only to check for a trial and to install what it verified, never while it
fetches and verifies; a newer ``stage`` or its rollout's ``rollback`` cancels it
(:mod:`agent.device.app.stage_control`). Local packages come only from ``package_dirs``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from agent.core.crash import crash_point
from agent.core.errors import AgentError
from agent.device.app.commands import Handler, Result
from agent.device.app.stage_control import RunningStage
from agent.device.greengrass.updates import UpdatePolicy
from agent.device.inference.guardrails import Breach, Guardrails, evaluate
from agent.device.inference.router import VariantError, VariantRouter
from agent.device.packages.errors import FetchCancelledError
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import PackageManifest
from agent.device.packages.staging import remove_stale_staging, stage
from agent.device.platform.profile import DeviceProfile
from agent.device.runtime import BackendConfig
from agent.device.store.records import version_id_of
from agent.device.store.store import ModelStore
from agent.device.store.stored_package import package_artifact
from agent.device.uplink.outbox import Outbox
from agent.wire.commands import Command, SetWeightsArgs, ShadowArgs, StageArgs
from agent.wire.replay import ReplayGuard
from agent.wire.signing import TrustStore

log = logging.getLogger("edge_agent.swaps")
MEMORY_FACTOR = 3  # weights in memory + runtime workspace + headroom, per byte of package


class InsufficientMemoryError(VariantError):
    """Free memory would not hold the candidate beside the serving model."""


def _package_refusal(manifest: PackageManifest, args: StageArgs) -> Result | None:
    """Why a verified package is not the one the stage command asked for, or None.

    A controller whose spec names one build must never get another one serving under
    its rollout: a wrong URL or a mislabelled build is refused, not staged. A label names
    the model too (``<name>-v<version>[-<variant>]``, checked against the package's
    model.json while staging), so a validly signed package of another model replayed as an
    update is refused here unless the command's label names that model; a package for
    another Neo target or CPU never gets this far (staging's artifact checks)."""
    label = manifest.label
    if label != args.version:
        return Result("rejected", f"package label {label}, the command expects {args.version}",
                      data={"code": "label_mismatch", "model": label,
                            "package_version": manifest.version, "expected": args.version})
    if args.package_version is not None and manifest.version != args.package_version:
        return Result("rejected", f"package {label} is version {manifest.version}, the "
                      f"command expects version {args.package_version}",
                      data={"code": "version_mismatch", "model": label,
                            "package_version": manifest.version,
                            "expected": args.package_version})
    return None


A = TypeVar("A")


def _args(command: Command, kind: type[A]) -> A:
    if not isinstance(command.args, kind):
        raise VariantError(f"{command.action} carries {type(command.args).__name__}")
    return command.args


@dataclass
class Rollout:
    rollout_id: str
    rollout_seq: int


class SwapController:
    def __init__(self, *, router: VariantRouter, store: ModelStore, trust: TrustStore,
                 guard: ReplayGuard, profile: DeviceProfile, work_dir: Path, outbox: Outbox,
                 updates: UpdatePolicy, guardrails: Guardrails, min_version: int = 0,
                 trial_s: float = 600.0, golden_timeout_s: float = 10.0,
                 backend_config: BackendConfig | None = None,
                 limits: PackageLimits | None = None, package_dirs: tuple[Path, ...] = ()) -> None:
        self.router, self.store, self.trust, self.guard = router, store, trust, guard
        self.profile, self.work_dir, self.outbox, self.updates = profile, work_dir, outbox, updates
        self.guardrails, self.min_version, self.trial_s = guardrails, min_version, trial_s
        self.golden_timeout_s = golden_timeout_s
        self.limits, self.package_dirs = limits or PackageLimits(), package_dirs
        self._staging = RunningStage()
        # The device's runtime settings: a package of that runtime loads (and is checked)
        # with them, one of the other runtime with that runtime's defaults.
        self.backend_config = backend_config
        self.green_version_id: str | None = None
        self.green_rollout: str | None = None  # the rollout that staged green
        self.rollout: Rollout | None = None
        self.trial_started: float | None = None
        self.trial_rollout: str | None = None  # the rollout whose promote is on trial
        self._trial_crash_checked = False
        self._lock = threading.RLock()
        work_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(work_dir)

    def handlers(self) -> dict[str, Handler]:
        locked = {"shadow": self.shadow, "set_weights": self.set_weights,
                  "promote": self.promote, "confirm": self.confirm, "rollback": self.rollback}
        return {"stage": self.stage, **{action: self._locked(handler)
                                        for action, handler in locked.items()}}

    def _locked(self, handler: Handler) -> Handler:
        def run(command: Command) -> Result:
            with self._lock:
                return handler(command)
        return run

    def interrupt(self, command: Command) -> None:
        """Cancel the stage in progress if ``command`` (arriving now) supersedes it."""
        self._staging.interrupt(command)

    # ---- commands -------------------------------------------------------------------

    def _enter(self, command: Command) -> None:
        if self.rollout is not None and self.rollout.rollout_id != command.rollout_id:
            self.guard.retire(self.rollout.rollout_id)  # its delayed commands are stale now
            self.updates.release(self.rollout.rollout_id)
        self.rollout = Rollout(command.rollout_id, command.rollout_seq)

    def stage(self, command: Command) -> Result:
        with self._lock:  # a trial starts only on this thread: it cannot start meanwhile
            if self.trial_started is not None:  # before fetching anything: the answer is known
                label, owner = self.router.blue.version, self.trial_rollout or "unknown"
                return Result("rejected", f"{label} promoted by rollout {owner} is on trial: "
                              f"rollout {owner} must confirm or roll it back first",
                              data={"code": "on_trial", "trial_rollout_id": owner,
                                    "model": label})
        args = _args(command, StageArgs)
        with self._staging.running(command) as cancel:
            try:
                staged = stage(args.url, trust=self.trust, min_version=self.min_version,
                               profile=self.profile, work_dir=self.work_dir,
                               limits=self.limits, expected_sha256=args.sha256,
                               golden_timeout_s=self.golden_timeout_s,
                               backend_config=self.backend_config,
                               allowed_dirs=self.package_dirs, cancel=cancel)
            except FetchCancelledError as err:
                return self._staging.cancelled(err)
        if cancel.is_set():  # superseded while it verified: not to be installed now
            shutil.rmtree(staged.dir, ignore_errors=True)
            return self._staging.cancelled(FetchCancelledError(
                f"{staged.manifest.describe()}: cancelled after it was verified"))
        manifest = staged.manifest
        version_id = version_id_of(manifest.version, staged.archive_sha256)
        refused = _package_refusal(manifest, args)
        if refused is not None or version_id in self.store.versions():
            # A refused package is never stored; an already stored one is used as it is.
            shutil.rmtree(staged.dir, ignore_errors=True)
        if refused is not None:
            return refused
        with self._lock:
            return self._install_green(command, staged.dir, version_id, manifest)

    def _install_green(self, command: Command, staged_dir: Path, version_id: str,
                       manifest: PackageManifest) -> Result:
        if version_id in self.store.versions():
            package = self.store.path(version_id)
        else:
            package = self.store.add(staged_dir, version_id=version_id,
                                     manifest=manifest.model_dump(mode="json"))
        self._check_memory(package)
        self._enter(command)
        crash_point("mid-load")
        artifact = package_artifact(package)
        label = artifact.label
        self.router.load_green(artifact.load(self.backend_config), label)
        self.green_version_id = version_id
        self.green_rollout = command.rollout_id
        self.updates.hold(command.rollout_id)
        log.info("%s verified and loaded beside %s", label, self.router.blue.version)
        return Result("ok", f"{label} staged",
                      data={"model": label, "package_version": manifest.version})

    def _check_memory(self, package: Path) -> None:
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        need = MEMORY_FACTOR * size
        available = min(psutil.virtual_memory().available, self.profile.mem_available_bytes)
        if need > available:
            raise InsufficientMemoryError(
                f"not enough free memory to hold the candidate beside the serving model: "
                f"needs ~{need / 2**20:.1f} MiB, {available / 2**20:.1f} MiB available")

    def _no_candidate(self, what: str) -> Result | None:
        if self.router.green is None:
            return Result("rejected", f"cannot {what}: no candidate model is staged")
        return None

    def shadow(self, command: Command) -> Result:
        if refused := self._no_candidate("shadow"):
            return refused
        self._enter(command)
        self.router.shadow(_args(command, ShadowArgs).sample_rate)
        self._steer(command)
        return Result("ok", f"shadowing {self.router.models().get('green')}")

    def set_weights(self, command: Command) -> Result:
        if refused := self._no_candidate("set weights"):
            return refused
        self._enter(command)
        args = _args(command, SetWeightsArgs)
        self.router.set_weights(args.blue, args.green)
        self._steer(command)
        return Result("ok", f"weights blue {args.blue} / green {args.green}")

    def _steer(self, command: Command) -> None:
        # The rollout steering traffic to the candidate owns it from now on (entering it
        # retired any other), so its rollback is the one that drops it.
        self.green_rollout = command.rollout_id
        self.updates.hold(command.rollout_id)

    def promote(self, command: Command) -> Result:
        if self.green_version_id is None or self.router.green is None:
            return Result("rejected", "nothing to promote: no candidate is staged")
        self._enter(command)
        self.store.promote(self.green_version_id, trial_s=self.trial_s,
                           rollout_id=command.rollout_id)
        label = self.router.green.version
        self.router.promote()
        self.green_version_id = self.green_rollout = None
        self.trial_started = time.monotonic()
        self.trial_rollout = command.rollout_id
        self._trial_crash_checked = False
        self.updates.hold(command.rollout_id)
        self.outbox.event("model_activated", f"{label} serves, on trial for {self.trial_s:g} s",
                          data={"version": label, "role": "blue"})
        return Result("ok", f"{label} promoted (trial {self.trial_s:g} s)",
                      data={"model": label})

    def confirm(self, command: Command) -> Result:
        """The rollout succeeded: end the trial of the model it promoted, now."""
        rollout, serving = command.rollout_id, self.router.blue.version
        if self.trial_started is not None and self.trial_rollout == rollout:
            self._enter(command)
            self._end_trial(f"trial of {serving} confirmed by rollout {rollout}")
            return Result("ok", f"{serving} confirmed", data={"model": serving})
        if self.trial_started is not None:
            owner = self.trial_rollout or "unknown"
            return Result("rejected", f"{serving} on trial was promoted by rollout {owner}, "
                          f"not {rollout}", data={"code": "other_rollout", "model": serving,
                                                  "trial_rollout_id": owner})
        if self.store.current_rollout() == rollout:  # e.g. the local trial already passed
            self.updates.release(rollout)
            return Result("ok", f"{serving} already confirmed", data={"model": serving})
        return Result("rejected", f"nothing of rollout {rollout} to confirm; {serving} serves",
                      data={"code": "nothing_to_confirm", "model": serving})

    def rollback(self, command: Command) -> Result:
        """Undo what this command's rollout did here: its trial, its candidate, or the
        current version it promoted; anything else is left alone (an ok no-op)."""
        rollout = command.rollout_id
        reason = f"rollback command of rollout {rollout}"
        if self.trial_started is not None and self.trial_rollout == rollout:
            self._enter(command)
            dropped = self._undo_trial(reason)
        elif self.router.green is not None and self.green_rollout == rollout:
            self._enter(command)
            dropped = self._drop_green()
        elif self.trial_started is None and self.store.current_rollout() == rollout:
            previous = self.store.previous()
            if previous is None:
                serving = self.router.blue.version
                return Result("rejected", f"{serving} of rollout {rollout} has no previous "
                              "version to go back to", data={"code": "no_previous",
                                                             "model": serving})
            self._enter(command)
            dropped = self._restore_previous(previous, reason)
        else:
            serving = self.router.blue.version
            return Result("ok", f"nothing of rollout {rollout} on this device; {serving} "
                          "serves", data={"code": "nothing_to_roll_back", "model": serving})
        self.updates.release(rollout)
        serving = self.router.blue.version
        return Result("ok", f"{dropped} rolled back; {serving} serves",
                      data={"model": serving})

    def _roll_back(self, reason: str) -> str | None:
        """A local rollback: undo the trial or drop the candidate, whichever rollout made
        it, or else go back to the stored previous version."""
        if self.trial_started is not None:
            dropped = self._undo_trial(reason)
        elif self.router.green is not None:
            dropped = self._drop_green()
        elif (previous := self.store.previous()) is not None:
            dropped = self._restore_previous(previous, reason)
        else:
            return None
        if self.rollout is not None:
            self.updates.release(self.rollout.rollout_id)
        return dropped

    def _undo_trial(self, reason: str) -> str:
        dropped = self.router.rollback()
        self.store.rollback(reason)
        self.trial_started = self.trial_rollout = None
        return dropped

    def _drop_green(self) -> str:
        dropped = self.router.rollback()
        self.green_version_id = self.green_rollout = None
        return dropped

    def _restore_previous(self, previous: str, reason: str) -> str:
        """Serve the store's previous version again (loading it replaces any candidate)."""
        artifact = package_artifact(self.store.path(previous))
        self.router.load_green(artifact.load(self.backend_config), artifact.label)
        self.green_version_id = self.green_rollout = None
        dropped = self.router.blue.version
        self.router.promote()
        self.router.confirm()
        self.store.rollback(reason)
        return dropped

    def _end_trial(self, detail: str) -> None:
        """The trial passed (its time ran out, or its rollout confirmed it)."""
        confirmed = self.store.confirm_trial()
        self.router.confirm()
        owner, self.trial_started, self.trial_rollout = self.trial_rollout, None, None
        if owner is not None:
            self.updates.release(owner)
        if self.rollout is not None:
            self.updates.release(self.rollout.rollout_id)
        self.store.prune()
        self.outbox.event("model_activated", detail,
                          data={"version": self.router.blue.version, "store_id": confirmed})

    # ---- schedule (agent main thread) ---------------------------------------------------

    def tick(self, *, rss_bytes: int | None = None, soc_temp_c: float | None = None) -> None:
        """Guardrails and trial timing; called a few times a second, off the inference path."""
        with self._lock:
            self._tick(rss_bytes, soc_temp_c)

    def _tick(self, rss_bytes: int | None, soc_temp_c: float | None) -> None:
        breach = evaluate(self.router, self.guardrails, rss_bytes=rss_bytes,
                          soc_temp_c=soc_temp_c)
        if breach is not None:
            self._local_rollback(breach)
        if self.trial_started is None:
            return
        if not self._trial_crash_checked:
            self._trial_crash_checked = True
            crash_point("during-trial")
        if time.monotonic() - self.trial_started >= self.trial_s:
            self._end_trial(f"trial of {self.router.blue.version} passed")

    def _local_rollback(self, breach: Breach) -> None:
        green = self.router.green.version if self.router.green else None
        self.outbox.event("guardrail_breach", breach.detail,
                          data={"rule": breach.rule, "observed": round(breach.observed, 6),
                                "limit": breach.limit, "version": green or ""})
        try:
            dropped = self._roll_back(f"guardrail {breach.rule}: {breach.detail}"[:400])
        except AgentError as err:
            self.outbox.event("agent_error", f"local rollback failed: {err}"[:512])
            return
        self.outbox.event("local_rollback", f"{dropped} rolled back on the device: "
                          f"{breach.rule}", data={"version": dropped or "",
                                                  "rule": breach.rule})
        log.warning("guardrail %s breached by %s: rolled back", breach.rule, dropped)
