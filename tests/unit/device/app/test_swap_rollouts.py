"""Rollout-scoped swaps on one in-process agent with the real store, real signed packages,
real DLR backends and the command processor: each rollout confirms or rolls back only
what it did, a stage waits for the trial of another rollout, a package that is not the one
asked for is refused, and the device announces itself on request.

The agent runs offline (no transport): every message it sends is read back from its spool
and decoded with the protocol's own codec. The main loop does not run, so a trial ends
only when a test confirms it or calls ``tick``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.device.app.config import load_config
from agent.device.app.service import AgentService
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    AnnounceCommand,
    Command,
    ConfirmCommand,
    PromoteCommand,
    RollbackCommand,
    SetWeightsCommand,
    StageCommand,
)
from agent.wire.messages import Ack, Event, Heartbeat, ProfileInfo, Register, UpMessage
from agent.wire.signing import Signer

ARTIFACT = "linux_x86_64-x86_64"
THING = "roll-1"


@pytest.fixture(scope="module")
def packages(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("rollout-packages")
    keys = keys_generate(root, "ctl-1")
    signer = Signer.from_file(keys.private, key_id="ctl-1")
    return {
        "key": keys.public, "signer": signer,
        "digits-v1": build_package(built_models / "digits-v1", ARTIFACT, signer=signer,
                                   out_dir=root / "first", version=1),
        "digits-v2": build_package(built_models / "digits-v2", ARTIFACT, signer=signer,
                                   out_dir=root, version=2),
    }


class Device:
    """One offline agent and a controller that signs commands for it."""

    def __init__(self, tmp_path: Path, packages: dict[str, Any]) -> None:
        self.packages = packages
        self.signer: Signer = packages["signer"]
        self.state_dir = tmp_path / "state"
        self.config = load_config({
            "thingName": THING, "thingGroups": ["canary"], "stateDir": str(self.state_dir),
            "initialPackage": str(packages["digits-v1"]), "rateHz": 200, "source": "random",
            "trustedKeys": {"ctl-1": str(packages["key"])}, "trialSeconds": 0.2,
            "goldenTimeoutSeconds": 10, "packageDirs": [str(packages["digits-v2"].parent)]})
        self.seqs: dict[str, Iterator[int]] = {}
        self.service = self._start()
        self.first_version = self.service.store.current()

    def _start(self) -> AgentService:
        service = AgentService(config=self.config, transport=None)
        service.start()
        return service

    def restart(self) -> None:
        self.service.shutdown()
        self.service = self._start()

    def stop(self) -> None:
        self.service.shutdown()

    def command(self, cls: type[Command], rollout: str, *, group: str | None = None,
                **args: Any) -> bytes:
        seq = next(self.seqs.setdefault(rollout, itertools.count(1)))
        fields: dict[str, Any] = {
            "command_id": uuid.uuid4().hex, "rollout_id": rollout, "rollout_seq": seq,
            "issued_at": int(time.time() * 1000),
            "target": {"kind": "group", "name": group} if group else
                      {"kind": "thing", "name": THING}}
        if args:
            fields["args"] = args
        return encode(self.signer.sign(cls(**fields)))

    def send(self, cls: type[Command], rollout: str, **args: Any) -> Ack:
        payload = self.command(cls, rollout, **args)
        self.service.commands.process(f"edge/{THING}/commands", payload)
        return self.ack_of(decode(payload, expect=Command).command_id)

    def stage(self, rollout: str, name: str = "digits-v2", **args: Any) -> Ack:
        package: Path = self.packages[name]
        fields: dict[str, Any] = {"url": package.as_uri(), "version": name,
                                  "sha256": hashlib.sha256(package.read_bytes()).hexdigest()}
        return self.send(StageCommand, rollout, **{**fields, **args})

    def messages(self) -> list[UpMessage]:
        return [decode(e.payload, expect=UpMessage) for e in self.service.spool.peek(100_000)]

    def ack_of(self, command_id: str) -> Ack:
        acks = [m for m in self.messages() if isinstance(m, Ack) and m.command_id == command_id]
        assert acks, f"no ack of {command_id}"
        return acks[-1]

    def events(self, kind: str) -> list[Event]:
        return [m for m in self.messages() if isinstance(m, Event) and m.kind == kind]

    def serving(self) -> dict[str, str]:
        return self.service.router.models()


@pytest.fixture
def device(tmp_path: Path, packages: dict[str, Any]) -> Iterator[Device]:
    device = Device(tmp_path, packages)
    yield device
    device.stop()


def _ok(ack: Ack) -> Ack:
    assert ack.outcome == "ok", (ack.reason, ack.data)
    return ack


def test_a_stage_waits_for_the_trial_of_another_rollout(device: Device) -> None:
    staged = _ok(device.stage("r-a", package_version=2))
    assert staged.reason == "digits-v2 staged"
    assert staged.data == {"model": "digits-v2", "package_version": 2}
    assert _ok(device.send(PromoteCommand, "r-a")).data == {"model": "digits-v2"}

    refused = device.stage("r-b")
    assert refused.outcome == "rejected"
    assert refused.reason == ("digits-v2 promoted by rollout r-a is on trial: rollout r-a "
                              "must confirm or roll it back first")
    assert refused.data == {"code": "on_trial", "trial_rollout_id": "r-a",
                            "model": "digits-v2"}

    # r-b's rollback finds nothing of r-b: r-a's trial goes on, and r-a may still confirm.
    noop = _ok(device.send(RollbackCommand, "r-b"))
    assert noop.reason == "nothing of rollout r-b on this device; digits-v2 serves"
    assert noop.data == {"code": "nothing_to_roll_back", "model": "digits-v2"}
    assert device.service.swaps.trial_started is not None
    assert device.service.store.trial() is not None
    assert device.serving() == {"blue": "digits-v2"}

    confirmed = _ok(device.send(ConfirmCommand, "r-a"))
    assert (confirmed.reason, confirmed.data) == ("digits-v2 confirmed", {"model": "digits-v2"})
    assert device.service.store.trial() is None and device.service.swaps.trial_started is None
    assert device.service.router.previous is None, "the old blue is unloaded"
    assert device.events("model_activated")[-1].detail == \
        "trial of digits-v2 confirmed by rollout r-a"
    assert device.service.updates.holding() is None

    again = _ok(device.send(ConfirmCommand, "r-a"))
    assert again.reason == "digits-v2 already confirmed"
    nothing = device.send(ConfirmCommand, "r-b")
    assert nothing.outcome == "rejected"
    assert nothing.data == {"code": "nothing_to_confirm", "model": "digits-v2"}
    assert _ok(device.stage("r-b")).data["model"] == "digits-v2", "no trial any more"


def test_confirm_of_another_rollouts_trial_is_refused(device: Device) -> None:
    _ok(device.stage("r-a"))
    _ok(device.send(PromoteCommand, "r-a"))
    refused = device.send(ConfirmCommand, "r-b")
    assert refused.outcome == "rejected"
    assert refused.data == {"code": "other_rollout", "model": "digits-v2",
                            "trial_rollout_id": "r-a"}
    assert device.service.store.trial() is not None, "the trial goes on"


def test_a_confirm_after_the_local_trial_passed_is_idempotent(device: Device) -> None:
    _ok(device.stage("r-a"))
    _ok(device.send(PromoteCommand, "r-a"))
    time.sleep(0.3)  # trialSeconds is 0.2
    device.service.swaps.tick()
    assert device.service.store.trial() is None
    assert device.events("model_activated")[-1].detail == "trial of digits-v2 passed"
    assert _ok(device.send(ConfirmCommand, "r-a")).reason == "digits-v2 already confirmed"


def test_a_package_other_than_the_one_asked_for_is_refused(device: Device) -> None:
    versions = device.service.store.versions()
    staging = device.state_dir / "staging"
    label = device.stage("r-a", version="digits-v3")
    assert label.outcome == "rejected"
    assert label.reason == "package label digits-v2, the command expects digits-v3"
    assert label.data == {"code": "label_mismatch", "model": "digits-v2",
                          "package_version": 2, "expected": "digits-v3"}
    version = device.stage("r-a", package_version=7)
    assert version.outcome == "rejected"
    assert version.reason == "package digits-v2 is version 2, the command expects version 7"
    assert version.data == {"code": "version_mismatch", "model": "digits-v2",
                            "package_version": 2, "expected": 7}
    assert device.serving() == {"blue": "digits-v1"}, "nothing loaded; blue serves"
    assert device.service.swaps.green_version_id is None
    assert device.service.store.versions() == versions, "nothing stored"
    assert list(staging.iterdir()) == [], "nothing left behind"
    assert device.service.updates.holding() is None
    # The right package, asked for correctly, stages.
    assert _ok(device.stage("r-a", package_version=2)).reason == "digits-v2 staged"


def test_a_late_rollback_of_a_refused_rollout_keeps_the_earlier_model(device: Device) -> None:
    """Rollout r-a promoted and confirmed digits-v2; r-b's stage was refused; r-b's fleet
    rollback must not take digits-v2 (r-a's success) away."""
    _ok(device.stage("r-a"))
    _ok(device.send(PromoteCommand, "r-a"))
    _ok(device.send(ConfirmCommand, "r-a"))
    current = device.service.store.current()
    assert device.stage("r-b", version="digits-v3").outcome == "rejected"
    ack = _ok(device.send(RollbackCommand, "r-b"))
    assert ack.data == {"code": "nothing_to_roll_back", "model": "digits-v2"}
    assert device.serving() == {"blue": "digits-v2"}
    store = device.service.store
    assert (store.current(), store.current_rollout()) == (current, "r-a")
    assert device.events("local_rollback") == []


def test_a_rollback_of_the_promoting_rollout_after_a_restart_goes_to_previous(
        device: Device) -> None:
    _ok(device.stage("r-a"))
    _ok(device.send(PromoteCommand, "r-a"))
    _ok(device.send(ConfirmCommand, "r-a"))
    device.restart()
    assert device.serving() == {"blue": "digits-v2"}
    assert device.service.store.current_rollout() == "r-a", "kept across the restart"
    assert _ok(device.send(RollbackCommand, "r-b")).data["code"] == "nothing_to_roll_back"
    back = _ok(device.send(RollbackCommand, "r-a"))
    assert back.reason == "digits-v2 rolled back; digits-v1 serves"
    assert back.data == {"model": "digits-v1"}
    store = device.service.store
    assert device.serving() == {"blue": "digits-v1"}
    assert (store.current(), store.current_rollout()) == (device.first_version, None)
    assert store.last_rollback() is not None
    assert store.last_rollback().reason == "rollback command of rollout r-a"  # type: ignore[union-attr]
    # Rolling back again finds nothing of r-a: the first model stays.
    again = _ok(device.send(RollbackCommand, "r-a"))
    assert again.data == {"code": "nothing_to_roll_back", "model": "digits-v1"}
    assert store.current() == device.first_version


def test_a_rollback_drops_only_its_own_rollouts_candidate_or_trial(device: Device) -> None:
    _ok(device.stage("r-a"))
    _ok(device.send(SetWeightsCommand, "r-a", blue=90, green=10))
    assert _ok(device.send(RollbackCommand, "r-b")).data["code"] == "nothing_to_roll_back"
    assert device.serving() == {"blue": "digits-v1", "green": "digits-v2"}
    dropped = _ok(device.send(RollbackCommand, "r-a"))
    assert dropped.reason == "digits-v2 rolled back; digits-v1 serves"
    assert device.serving() == {"blue": "digits-v1"}
    assert device.service.router.mode == "serve"

    _ok(device.stage("r-c"))
    _ok(device.send(PromoteCommand, "r-c"))
    assert device.service.store.current_rollout() == "r-c"
    undone = _ok(device.send(RollbackCommand, "r-c"))
    assert undone.reason == "digits-v2 rolled back; digits-v1 serves"
    store = device.service.store
    assert store.trial() is None and store.current() == device.first_version
    assert store.current_rollout() is None and device.service.swaps.trial_started is None
    assert device.service.updates.holding() is None


def test_heartbeat_carries_groups_and_profile_and_announce_sends_a_register(
        device: Device) -> None:
    device.service.heartbeat()
    heartbeat = [m for m in device.messages() if isinstance(m, Heartbeat)][-1]
    assert heartbeat.groups == ["canary"]
    assert heartbeat.profile == ProfileInfo.model_validate(device.service.profile.to_dict())

    registers = [m for m in device.messages() if isinstance(m, Register)]
    assert len(registers) == 1, "sent once, at start"
    payload = device.command(AnnounceCommand, "announce", group="canary")
    device.service.commands.process("edge/groups/canary/commands", payload)
    ack = device.ack_of(decode(payload, expect=Command).command_id)
    assert (ack.outcome, ack.reason) == ("ok", "register sent")
    registers = [m for m in device.messages() if isinstance(m, Register)]
    assert len(registers) == 2
    latest = registers[-1]
    assert latest.groups == ["canary"] and latest.models == {"blue": "digits-v1"}
    assert latest.profile == heartbeat.profile and latest.boot_id == heartbeat.boot_id
    assert latest.seq < ack.seq, "the register goes out before the ack"


def test_ack_data_survives_the_spool_codec_and_a_replay(device: Device) -> None:
    payload = device.command(ConfirmCommand, "r-z")
    topic = f"edge/{THING}/commands"
    device.service.commands.process(topic, payload)
    device.service.commands.process(topic, payload)  # the same bytes again: re-acked
    command_id = decode(payload, expect=Command).command_id
    acks = [m for m in device.messages() if isinstance(m, Ack) and m.command_id == command_id]
    assert len(acks) == 2 and acks[0].data == acks[1].data == {
        "code": "nothing_to_confirm", "model": "digits-v1"}
    raw = [e.payload for e in device.service.spool.peek(100_000) if e.topic.endswith("/ack")]
    assert b'"data":{"code":"nothing_to_confirm","model":"digits-v1"}' in raw[-1]


def test_every_command_is_logged(device: Device, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.commands")
    announce = device.command(AnnounceCommand, "r-log")
    confirm = device.command(ConfirmCommand, "r-log")
    topic = f"edge/{THING}/commands"
    device.service.commands.process(topic, announce)
    device.service.commands.process(topic, confirm)
    device.service.commands.process(topic, b"{not json")
    records = [(r.levelno, r.getMessage()) for r in caplog.records
               if r.name == "edge_agent.commands"]
    announce_id = decode(announce, expect=Command).command_id
    confirm_id = decode(confirm, expect=Command).command_id
    assert records[0] == (logging.INFO, f"command announce {announce_id} of rollout r-log "
                                        "seq 1: ok — register sent")
    assert records[1] == (logging.WARNING, f"command confirm {confirm_id} of rollout r-log "
                                           "seq 2: rejected — nothing of rollout r-log to "
                                           "confirm; digits-v1 serves")
    level, text = records[2]
    assert level == logging.WARNING and "rejected (malformed)" in text
