"""Model swaps on a running device: stage, shadow, weights, promote, rollback, trials and
local guardrails, driven by signed commands.

Slow work (download, verification, golden vectors in a child, loading) runs on
the command thread, never on the inference thread; a model change is a plan
switch that lands between two inferences. The store's ``current`` pointer moves
only on promote (on trial) and is confirmed when the trial passes; a restart
during a trial comes back on the model before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from agent.device.profile import DeviceProfile
from agent.errors import AgentError
from agent.model_dir import artifact_dir_name
from agent.protocol.commands import Command, SetWeightsArgs, ShadowArgs, StageArgs
from agent.protocol.replay import ReplayGuard
from agent.protocol.signing import TrustStore
from agent.runtime import DlrConfig, load_backend
from agent.runtime.base import Backend
from agent.service.commands import Handler, Result
from agent.service.outbox import Outbox
from agent.service.updates import UpdatePolicy
from agent.swap.crash import crash_point
from agent.swap.staging import remove_stale_staging, stage
from agent.swap.store import ModelStore, StoreError
from agent.variants.guardrails import Breach, Guardrails, evaluate
from agent.variants.router import VariantError, VariantRouter

log = logging.getLogger("edge_agent.swaps")
MEMORY_FACTOR = 3  # weights in memory + runtime workspace + headroom, per byte of package


class InsufficientMemoryError(VariantError):
    """Free memory would not hold the candidate beside the serving model."""


def package_artifact(package_dir: Path) -> tuple[Path, str]:
    """The DLR artifact directory inside a stored package, and the package's label."""
    manifest = json.loads((package_dir / "manifest.json").read_text())
    label = str(manifest["label"])
    return package_dir / "dlr" / artifact_dir_name(manifest["target"], manifest["arch"]), label


def verify_package_files(package_dir: Path) -> None:
    """Every file the signed manifest lists is present with its digest (store recovery)."""
    manifest = json.loads((package_dir / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        digest = hashlib.sha256((package_dir / name).read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise StoreError(f"{name} no longer matches its signed digest")


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
                 dlr_config: DlrConfig | None = None) -> None:
        self.router, self.store, self.trust, self.guard = router, store, trust, guard
        self.profile, self.work_dir, self.outbox, self.updates = profile, work_dir, outbox, updates
        self.guardrails, self.min_version, self.trial_s = guardrails, min_version, trial_s
        self.golden_timeout_s = golden_timeout_s
        self.dlr_config = dlr_config or DlrConfig()
        self.green_version_id: str | None = None
        self.rollout: Rollout | None = None
        self.trial_started: float | None = None
        self._trial_crash_checked = False
        work_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(work_dir)

    def handlers(self) -> dict[str, Handler]:
        return {"stage": self.stage, "shadow": self.shadow, "set_weights": self.set_weights,
                "promote": self.promote, "rollback": self.rollback}

    # ---- commands -------------------------------------------------------------------

    def _enter(self, command: Command) -> None:
        if self.rollout is not None and self.rollout.rollout_id != command.rollout_id:
            self.guard.retire(self.rollout.rollout_id)  # its delayed commands are stale now
            self.updates.release(self.rollout.rollout_id)
        self.rollout = Rollout(command.rollout_id, command.rollout_seq)

    def stage(self, command: Command) -> Result:
        if self.trial_started is not None:
            return Result("rejected", "a promoted model is on trial: promote or roll back first")
        args = _args(command, StageArgs)
        staged = stage(args.url, trust=self.trust, min_version=self.min_version,
                       profile=self.profile, work_dir=self.work_dir,
                       expected_sha256=args.sha256, golden_timeout_s=self.golden_timeout_s)
        manifest = staged.manifest
        version_id = f"v{manifest.version}-{staged.archive_sha256[:12]}"
        if version_id in self.store.versions():
            package = self.store.path(version_id)
        else:
            package = self.store.add(staged.dir, version_id=version_id,
                                     manifest=manifest.model_dump(mode="json"))
        self._check_memory(package)
        self._enter(command)
        crash_point("mid-load")
        artifact, label = package_artifact(package)
        backend: Backend = load_backend(artifact, self.dlr_config)
        self.router.load_green(backend, label)
        self.green_version_id = version_id
        self.updates.hold(command.rollout_id)
        log.info("%s verified and loaded beside %s", label, self.router.blue.version)
        return Result("ok", f"{label} staged")

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
        self.updates.hold(command.rollout_id)
        return Result("ok", f"shadowing {self.router.models().get('green')}")

    def set_weights(self, command: Command) -> Result:
        if refused := self._no_candidate("set weights"):
            return refused
        self._enter(command)
        args = _args(command, SetWeightsArgs)
        self.router.set_weights(args.blue, args.green)
        self.updates.hold(command.rollout_id)
        return Result("ok", f"weights blue {args.blue} / green {args.green}")

    def promote(self, command: Command) -> Result:
        if self.green_version_id is None or self.router.green is None:
            return Result("rejected", "nothing to promote: no candidate is staged")
        self._enter(command)
        self.store.promote(self.green_version_id, trial_s=self.trial_s)
        label = self.router.green.version
        self.router.promote()
        self.green_version_id = None
        self.trial_started = time.monotonic()
        self._trial_crash_checked = False
        self.updates.hold(command.rollout_id)
        self.outbox.event("model_activated", f"{label} serves, on trial for {self.trial_s:g} s",
                          data={"version": label, "role": "blue"})
        return Result("ok", f"{label} promoted (trial {self.trial_s:g} s)")

    def rollback(self, command: Command) -> Result:
        self._enter(command)
        dropped = self._roll_back("rollback command")
        if dropped is None:
            return Result("rejected", "nothing to roll back to")
        return Result("ok", f"{dropped} rolled back; {self.router.blue.version} serves")

    def _roll_back(self, reason: str) -> str | None:
        """Undo a trial or drop a candidate, or else go back to the stored previous version."""
        if self.trial_started is not None:
            dropped = self.router.rollback()
            self.store.rollback(reason)
            self.trial_started = None
        elif self.router.green is not None:
            dropped = self.router.rollback()
            self.green_version_id = None
        elif self.store.previous() is not None:
            previous = self.store.previous()
            assert previous is not None
            artifact, label = package_artifact(self.store.path(previous))
            self.router.load_green(load_backend(artifact, self.dlr_config), label)
            dropped = self.router.blue.version
            self.router.promote()
            self.router.confirm()
            self.store.rollback(reason)
        else:
            return None
        if self.rollout is not None:
            self.updates.release(self.rollout.rollout_id)
        return dropped

    # ---- schedule (agent main thread) ---------------------------------------------------

    def tick(self, *, rss_bytes: int | None = None, soc_temp_c: float | None = None) -> None:
        """Guardrails and trial timing; called a few times a second, off the inference path."""
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
            confirmed = self.store.confirm_trial()
            self.router.confirm()
            self.trial_started = None
            if self.rollout is not None:
                self.updates.release(self.rollout.rollout_id)
            self.store.prune()
            self.outbox.event("model_activated", f"trial of {self.router.blue.version} passed",
                              data={"version": self.router.blue.version, "store_id": confirmed})

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
