"""SwapController on its own, in-process: a real model store, real signed packages staged
through the real checks (golden vectors in a child), real DLR backends behind a real
router, a real outbox on a spool. Commands go to the handlers directly (the gate is the
command processor's job); the inference loop does not run, so a trial ends only when a
test confirms it or calls ``tick``. ``digits-v1`` serves first; the candidate is ``digits-v2``.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from package_support import HOST_ARTIFACT

from agent.device.app import swaps
from agent.device.app.commands import Result
from agent.device.app.swaps import InsufficientMemoryError, SwapController
from agent.device.greengrass.updates import UpdatePolicy
from agent.device.inference.guardrails import Guardrails
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import RandomSource
from agent.device.packages.staging import stage
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.runtime import (
    BackendConfig,
    DlrBackend,
    DlrConfig,
    OnnxBackend,
    OnnxConfig,
    load_backend,
)
from agent.device.store.store import ModelStore
from agent.device.store.stored_package import package_artifact
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.tools.packaging.build import build_onnx_package, build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.codec import decode
from agent.wire.commands import (
    Command,
    ConfirmCommand,
    PromoteCommand,
    RollbackCommand,
    SetWeightsCommand,
    ShadowCommand,
    StageCommand,
)
from agent.wire.errors import StaleCommandError
from agent.wire.messages import Event, UpMessage
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.signing import Signer, TrustStore
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics

THING = "swap-unit-1"
GOLDEN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Packages:
    trust: TrustStore
    files: dict[str, Path]
    stores: dict[str | None, Path]  # rollout owning the first model -> a store template
    first_version: str


@pytest.fixture(scope="module")
def packages(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """digits-v1 (version 1) and digits-v2 (version 2, and its ONNX package), and two stores
    with digits-v1 current: one installed as a first model, one promoted by rollout
    ``r-0``."""
    root = tmp_path_factory.mktemp("swap-controller")
    keys = keys_generate(root, "ctl-1")
    signer = Signer.from_file(keys.private, key_id="ctl-1")
    trust = TrustStore.from_files({"ctl-1": keys.public})
    files = {name: build_package(built_models / name, HOST_ARTIFACT, signer=signer,
                                 out_dir=root / name, version=version)
             for name, version in (("digits-v1", 1), ("digits-v2", 2))}
    files["digits-v2-onnx"] = build_onnx_package(built_models / "digits-v2", signer=signer,
                                                 out_dir=root / "onnx")
    staged = stage(files["digits-v1"], trust=trust, min_version=0, profile=detect_profile(),
                   work_dir=root / "staging", golden_timeout_s=GOLDEN_TIMEOUT_S)
    version_id = f"v1-{staged.archive_sha256[:12]}"
    stores: dict[str | None, Path] = {}
    for rollout in (None, "r-0"):
        stores[rollout] = root / f"store-{rollout or 'first'}"
        copy = root / f"staged-{rollout or 'first'}"
        shutil.copytree(staged.dir, copy)
        with ModelStore(stores[rollout]) as store:
            store.add(copy, version_id=version_id,
                      manifest=staged.manifest.model_dump(mode="json"))
            store.promote(version_id, trial_s=1.0, rollout_id=rollout)
            store.confirm_trial()
    return Packages(trust=trust, files=files, stores=stores, first_version=version_id)


@dataclass
class Rig:
    """One SwapController and the real parts around it."""

    controller: SwapController
    store: ModelStore
    router: VariantRouter
    spool: Spool
    guard: ReplayGuard
    updates: UpdatePolicy
    work_dir: Path
    packages: Packages
    seqs: dict[str, Iterator[int]] = field(default_factory=dict)

    def command(self, cls: type[Command], rollout: str, **args: Any) -> Command:
        seq = next(self.seqs.setdefault(rollout, itertools.count(1)))
        fields: dict[str, Any] = {"rollout_id": rollout, "rollout_seq": seq, "issued_at": 0,
                                  "target": {"kind": "thing", "name": THING}}
        if args:
            fields["args"] = args
        return cls(**fields)

    def send(self, cls: type[Command], rollout: str, **args: Any) -> Result:
        command = self.command(cls, rollout, **args)
        return self.controller.handlers()[command.action](command)

    def stage(self, rollout: str, name: str = "digits-v2", **args: Any) -> Result:
        package = self.packages.files[name]
        fields: dict[str, Any] = {"url": package.as_uri(), "version": name,
                                  "sha256": hashlib.sha256(package.read_bytes()).hexdigest()}
        return self.send(StageCommand, rollout, **{**fields, **args})

    def events(self, kind: str) -> list[Event]:
        messages = [decode(e.payload, expect=UpMessage) for e in self.spool.peek(100_000)]
        return [m for m in messages if isinstance(m, Event) and m.kind == kind]


def _rig(tmp_path: Path, packages: Packages, first_rollout: str | None,
         backend_config: BackendConfig | None = None) -> Iterator[Rig]:
    root = tmp_path / "models"
    shutil.copytree(packages.stores[first_rollout], root)
    profile: DeviceProfile = detect_profile()
    store = ModelStore(root)
    stored = package_artifact(store.path(packages.first_version))
    assert stored.backend == "dlr"
    label = stored.label
    backend = load_backend(stored.path, DlrConfig())
    loop = InferenceLoop(backend=backend, make_source=lambda buffers: RandomSource(
        buffers=buffers, specs=backend.inputs))
    router = VariantRouter(loop=loop, blue_version=label)
    spool = Spool(path=tmp_path / "spool.db")
    outbox = Outbox(stamper=Stamper(thing=THING, counter=SequenceCounter(
        path=tmp_path / "sequence")), topics=Topics(thing=THING), spool=spool)
    guard, updates = ReplayGuard(thing=THING), UpdatePolicy()
    controller = SwapController(
        router=router, store=store, trust=packages.trust, guard=guard, profile=profile,
        work_dir=tmp_path / "staging", outbox=outbox, updates=updates,
        guardrails=Guardrails(), trial_s=600.0, golden_timeout_s=GOLDEN_TIMEOUT_S,
        backend_config=backend_config,
        package_dirs=tuple({path.parent for path in packages.files.values()}))
    yield Rig(controller=controller, store=store, router=router, spool=spool, guard=guard,
              updates=updates, work_dir=tmp_path / "staging", packages=packages)
    for role in filter(None, (router.green, router.previous, router.blue)):
        role.lane.backend.close()
    loop.close()
    spool.close()
    store.close()


@pytest.fixture
def rig(tmp_path: Path, packages: Packages) -> Iterator[Rig]:
    yield from _rig(tmp_path, packages, None)


@pytest.fixture
def owned_rig(tmp_path: Path, packages: Packages) -> Iterator[Rig]:
    """digits-v1 current, promoted by rollout ``r-0``, with nothing before it."""
    yield from _rig(tmp_path, packages, "r-0")


def _ok(result: Result) -> Result:
    assert result.outcome == "ok", (result.reason, dict(result.data))
    return result


def _old_blue_loaded(rig: Rig) -> bool:
    return rig.router.previous is not None


def _refused(result: Result, code: str) -> dict[str, Any]:
    assert result.outcome == "rejected", (result.reason, dict(result.data))
    assert result.data.get("code") == code, dict(result.data)
    return dict(result.data)


def test_stage_verifies_stores_and_loads_green_beside_blue(rig: Rig) -> None:
    staged = _ok(rig.stage("r-a", package_version=2))
    assert (staged.reason, dict(staged.data)) == (
        "digits-v2 staged", {"model": "digits-v2", "package_version": 2})
    assert rig.router.models() == {"blue": "digits-v1", "green": "digits-v2"}
    green = rig.controller.green_version_id
    assert green is not None and green.startswith("v2-") and green in rig.store.versions()
    assert rig.store.current() == rig.packages.first_version, "staging moves no pointer"
    assert rig.controller.green_rollout == "r-a"
    assert rig.updates.holding() is not None, "component updates wait for the rollout"
    assert list(rig.work_dir.iterdir()) == [], "the staged package moved into the store"


def test_a_stored_version_staged_again_is_reused(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    versions = rig.store.versions()
    _ok(rig.stage("r-a"))
    assert rig.store.versions() == versions
    assert list(rig.work_dir.iterdir()) == []
    assert rig.router.models() == {"blue": "digits-v1", "green": "digits-v2"}


def test_stage_shadow_weights_promote_confirm(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    green = rig.controller.green_version_id
    assert _ok(rig.send(ShadowCommand, "r-a", sample_rate=0.5)).reason == \
        "shadowing digits-v2"
    assert rig.router.mode == "shadow"
    assert _ok(rig.send(SetWeightsCommand, "r-a", blue=90, green=10)).reason == \
        "weights blue 90 / green 10"
    assert (rig.router.mode, rig.router.weights) == ("weighted", (90, 10))

    promoted = _ok(rig.send(PromoteCommand, "r-a"))
    assert (promoted.reason, dict(promoted.data)) == (
        "digits-v2 promoted (trial 600 s)", {"model": "digits-v2"})
    assert rig.router.models() == {"blue": "digits-v2"}
    assert _old_blue_loaded(rig), "the old blue stays loaded during the trial"
    trial = rig.store.trial()
    assert trial is not None and (trial.version_id, trial.rollout_id) == (green, "r-a")
    assert rig.controller.trial_rollout == "r-a" and rig.controller.green_version_id is None
    assert rig.events("model_activated")[-1].data == {"version": "digits-v2", "role": "blue"}

    confirmed = _ok(rig.send(ConfirmCommand, "r-a"))
    assert (confirmed.reason, dict(confirmed.data)) == (
        "digits-v2 confirmed", {"model": "digits-v2"})
    assert rig.store.trial() is None and rig.controller.trial_started is None
    assert (rig.store.current(), rig.store.current_rollout()) == (green, "r-a")
    assert rig.store.previous() == rig.packages.first_version
    assert not _old_blue_loaded(rig), "the old blue is unloaded"
    assert rig.updates.holding() is None
    activated = rig.events("model_activated")[-1]
    assert activated.detail == "trial of digits-v2 confirmed by rollout r-a"
    assert activated.data == {"version": "digits-v2", "store_id": green}
    assert _ok(rig.send(ConfirmCommand, "r-a")).reason == "digits-v2 already confirmed"


def test_a_trial_passes_on_tick_once_its_time_is_up(rig: Rig) -> None:
    rig.controller.trial_s = 0.05
    _ok(rig.stage("r-a"))
    _ok(rig.send(PromoteCommand, "r-a"))
    rig.controller.tick()
    assert rig.store.trial() is not None, "not before its time"
    time.sleep(0.1)
    rig.controller.tick()
    assert rig.store.trial() is None and rig.controller.trial_started is None
    assert rig.events("model_activated")[-1].detail == "trial of digits-v2 passed"
    assert rig.updates.holding() is None
    assert _ok(rig.send(ConfirmCommand, "r-a")).reason == "digits-v2 already confirmed"


def test_nothing_staged_refuses_or_does_nothing(rig: Rig) -> None:
    assert set(rig.controller.handlers()) == {"stage", "shadow", "set_weights", "promote",
                                              "confirm", "rollback"}
    for cls, args, reason in (
            (ShadowCommand, {"sample_rate": 1.0},
             "cannot shadow: no candidate model is staged"),
            (SetWeightsCommand, {"blue": 50, "green": 50},
             "cannot set weights: no candidate model is staged"),
            (PromoteCommand, {}, "nothing to promote: no candidate is staged")):
        refused = rig.send(cls, "r-a", **args)
        assert (refused.outcome, refused.reason) == ("rejected", reason)
    confirm = rig.send(ConfirmCommand, "r-a")
    assert _refused(confirm, "nothing_to_confirm") == {"code": "nothing_to_confirm",
                                                      "model": "digits-v1"}
    assert confirm.reason == "nothing of rollout r-a to confirm; digits-v1 serves"
    noop = _ok(rig.send(RollbackCommand, "r-a"))
    assert dict(noop.data) == {"code": "nothing_to_roll_back", "model": "digits-v1"}
    assert rig.router.models() == {"blue": "digits-v1"}
    assert rig.store.current() == rig.packages.first_version


def test_a_package_other_than_the_one_asked_for_is_refused(rig: Rig) -> None:
    versions = rig.store.versions()
    label = rig.stage("r-a", version="digits-v3")
    assert _refused(label, "label_mismatch") == {
        "code": "label_mismatch", "model": "digits-v2", "package_version": 2,
        "expected": "digits-v3"}
    assert label.reason == "package label digits-v2, the command expects digits-v3"
    version = rig.stage("r-a", package_version=7)
    assert _refused(version, "version_mismatch") == {
        "code": "version_mismatch", "model": "digits-v2", "package_version": 2,
        "expected": 7}
    assert rig.router.models() == {"blue": "digits-v1"}, "nothing loaded"
    assert rig.store.versions() == versions, "nothing stored"
    assert list(rig.work_dir.iterdir()) == [], "nothing left behind"
    assert rig.controller.green_version_id is None and rig.controller.rollout is None
    assert rig.updates.holding() is None


def test_a_stage_during_a_trial_is_refused_before_fetching(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    _ok(rig.send(PromoteCommand, "r-a"))
    missing = (rig.work_dir.parent / "no-such-package.tar.gz").as_uri()
    refused = rig.stage("r-b", url=missing)  # fetching it would raise
    assert _refused(refused, "on_trial") == {"code": "on_trial", "trial_rollout_id": "r-a",
                                             "model": "digits-v2"}
    assert refused.reason == ("digits-v2 promoted by rollout r-a is on trial: rollout r-a "
                              "must confirm or roll it back first")
    assert rig.controller.trial_rollout == "r-a" and rig.store.trial() is not None


def test_confirm_of_another_rollouts_trial_is_refused(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    _ok(rig.send(PromoteCommand, "r-a"))
    refused = rig.send(ConfirmCommand, "r-b")
    assert _refused(refused, "other_rollout") == {"code": "other_rollout",
                                                  "model": "digits-v2",
                                                  "trial_rollout_id": "r-a"}
    assert rig.store.trial() is not None and rig.controller.trial_started is not None


def test_a_rollback_drops_only_its_own_rollouts_candidate(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    _ok(rig.send(SetWeightsCommand, "r-a", blue=90, green=10))
    other = _ok(rig.send(RollbackCommand, "r-b"))
    assert dict(other.data) == {"code": "nothing_to_roll_back", "model": "digits-v1"}
    assert other.reason == "nothing of rollout r-b on this device; digits-v1 serves"
    assert rig.router.models() == {"blue": "digits-v1", "green": "digits-v2"}
    dropped = _ok(rig.send(RollbackCommand, "r-a"))
    assert (dropped.reason, dict(dropped.data)) == (
        "digits-v2 rolled back; digits-v1 serves", {"model": "digits-v1"})
    assert rig.router.models() == {"blue": "digits-v1"} and rig.router.mode == "serve"
    assert rig.controller.green_version_id is None and rig.updates.holding() is None


def test_a_rollback_of_its_own_trial_restores_the_model_before(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    _ok(rig.send(PromoteCommand, "r-a"))
    undone = _ok(rig.send(RollbackCommand, "r-a"))
    assert undone.reason == "digits-v2 rolled back; digits-v1 serves"
    assert rig.router.models() == {"blue": "digits-v1"} and rig.router.previous is None
    assert rig.store.trial() is None and rig.controller.trial_started is None
    assert (rig.store.current(), rig.store.current_rollout()) == (
        rig.packages.first_version, None)
    last = rig.store.last_rollback()
    assert last is not None and last.reason == "rollback command of rollout r-a"
    assert rig.updates.holding() is None


def test_a_rollback_after_confirm_goes_back_to_the_previous_version(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    _ok(rig.send(PromoteCommand, "r-a"))
    _ok(rig.send(ConfirmCommand, "r-a"))
    assert dict(_ok(rig.send(RollbackCommand, "r-b")).data) == {
        "code": "nothing_to_roll_back", "model": "digits-v2"}
    back = _ok(rig.send(RollbackCommand, "r-a"))
    assert (back.reason, dict(back.data)) == (
        "digits-v2 rolled back; digits-v1 serves", {"model": "digits-v1"})
    assert rig.router.models() == {"blue": "digits-v1"}, "loaded again from the store"
    assert (rig.store.current(), rig.store.current_rollout()) == (
        rig.packages.first_version, None)
    again = _ok(rig.send(RollbackCommand, "r-a"))
    assert dict(again.data) == {"code": "nothing_to_roll_back", "model": "digits-v1"}


def test_a_rollback_with_no_previous_version_is_refused(owned_rig: Rig) -> None:
    rig = owned_rig
    assert rig.store.current_rollout() == "r-0" and rig.store.previous() is None
    refused = rig.send(RollbackCommand, "r-0")
    assert _refused(refused, "no_previous") == {"code": "no_previous", "model": "digits-v1"}
    assert refused.reason == "digits-v1 of rollout r-0 has no previous version to go back to"
    assert rig.store.current() == rig.packages.first_version
    assert rig.controller.rollout is None, "a refused rollback enters no rollout"


def test_a_new_rollout_retires_the_one_before(rig: Rig) -> None:
    _ok(rig.stage("r-a"))
    assert rig.controller.green_rollout == "r-a"
    _ok(rig.send(ShadowCommand, "r-b", sample_rate=1.0))
    assert rig.controller.green_rollout == "r-b", "steering traffic takes the candidate over"
    with pytest.raises(StaleCommandError):
        rig.guard.check(rig.command(RollbackCommand, "r-a"))
    assert dict(_ok(rig.send(RollbackCommand, "r-a")).data)["code"] == "nothing_to_roll_back"
    assert rig.router.models() == {"blue": "digits-v1", "green": "digits-v2"}


def test_a_guardrail_breach_rolls_the_candidate_back_locally(rig: Rig) -> None:
    rig.controller.guardrails = Guardrails(max_rss_bytes=1)
    _ok(rig.stage("r-a"))
    rig.controller.tick(rss_bytes=2)
    assert rig.router.models() == {"blue": "digits-v1"}
    breach = rig.events("guardrail_breach")[-1]
    assert breach.data["rule"] == "rss" and breach.data["version"] == "digits-v2"
    rollback = rig.events("local_rollback")[-1]
    assert rollback.data == {"version": "digits-v2", "rule": "rss"}
    assert rig.controller.green_version_id is None and rig.updates.holding() is None


def test_a_candidate_that_does_not_fit_in_memory_is_not_loaded(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swaps, "MEMORY_FACTOR", 10**9)
    with pytest.raises(InsufficientMemoryError, match="not enough free memory"):
        rig.stage("r-a")
    assert rig.router.models() == {"blue": "digits-v1"}
    assert rig.controller.rollout is None and rig.updates.holding() is None


def _green_backend(rig: Rig) -> object:
    assert rig.router.green is not None
    return rig.router.green.lane.backend


@pytest.mark.parametrize("configured", [OnnxConfig(intra_op_threads=1), None])
def test_an_onnx_package_swaps_in_and_out(tmp_path: Path, packages: Packages,
                                          configured: OnnxConfig | None) -> None:
    """A device configured for ONNX (or for nothing in particular) takes an ONNX package,
    with its ONNX settings; the DLR model before it comes back on a rollback."""
    for rig in _rig(tmp_path, packages, None, configured):
        staged = _ok(rig.stage("r-onnx", name="digits-v2-onnx", version="digits-v2"))
        assert staged.data["model"] == "digits-v2"
        green = _green_backend(rig)
        assert isinstance(green, OnnxBackend)
        assert green.config == (configured or OnnxConfig())
        _ok(rig.send(PromoteCommand, "r-onnx"))
        _ok(rig.send(ConfirmCommand, "r-onnx"))
        assert isinstance(rig.router.blue.lane.backend, OnnxBackend)
        _ok(rig.send(RollbackCommand, "r-onnx"))
        assert rig.router.models() == {"blue": "digits-v1"}
        assert isinstance(rig.router.blue.lane.backend, DlrBackend)


def test_dlr_packages_load_with_the_configured_dlr_settings(tmp_path: Path,
                                                            packages: Packages) -> None:
    for rig in _rig(tmp_path / "dlr", packages, None, DlrConfig(num_threads=1)):
        _ok(rig.stage("r-a"))
        green = _green_backend(rig)
        assert isinstance(green, DlrBackend) and green.config.num_threads == 1
    for rig in _rig(tmp_path / "onnx", packages, None, OnnxConfig(intra_op_threads=1)):
        _ok(rig.stage("r-a"))  # a DLR package on an ONNX device: DLR's defaults
        green = _green_backend(rig)
        assert isinstance(green, DlrBackend) and green.config == DlrConfig()
