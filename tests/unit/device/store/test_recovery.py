"""ModelStore.recover(): what the agent finds at start and how the store repairs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.core.errors import ArtifactCorruptError
from agent.device.store.store import ModelStore, StoreCorruptError


def staged(tmp_path: Path, version_id: str) -> Path:
    package = tmp_path / "staging" / version_id
    (package / "onnx").mkdir(parents=True)
    (package / "onnx" / "model.onnx").write_bytes(version_id.encode() * 32)
    return package


def build(root: Path, tmp_path: Path, promoted: list[str], *, extra: tuple[str, ...] = (),
          trial_last: bool = False) -> None:
    """A store whose versions were promoted in this order (the last maybe still on trial)."""
    with ModelStore(root) as store:
        for version_id in [*promoted, *extra]:
            store.add(staged(tmp_path, version_id), version_id=version_id,
                      manifest={"version": version_id})
        for index, version_id in enumerate(promoted):
            store.promote(version_id, trial_s=60)
            if not (trial_last and index == len(promoted) - 1):
                store.confirm_trial()


def test_a_clean_store_needs_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous, report.reason, report.removed) == (
            None, None, None, ())
    build(root, tmp_path, ["v1", "v2"])
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v2", "v1")
        assert report.reason is None and report.rolled_back_from is None


def test_a_restart_during_a_trial_fails_the_trial(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2", "v3"], trial_last=True)
    with ModelStore(root) as store:
        report = store.recover()
        assert report.rolled_back_from == "v3"
        assert report.reason == "restarted during trial of v3"
        assert (report.current, report.previous) == ("v2", "v1")
        assert store.trial() is None
        last = store.last_rollback()
        assert last is not None and last.reason == "restarted during trial of v3"
        assert store.versions() == ["v1", "v2", "v3"], "the failed version is kept until pruned"


def test_a_current_whose_directory_vanished_falls_back_to_previous(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2", "v3"])
    shutil.rmtree(root / "versions" / "v3")
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v2", "v1")
        assert report.rolled_back_from == "v3"
        assert report.reason is not None and "v3 is missing" in report.reason


def test_an_incomplete_current_falls_back_and_is_deleted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2"])
    (root / "versions" / "v2" / "VERIFIED").unlink()
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v1", None)
        assert report.reason is not None and "incomplete (no VERIFIED marker)" in report.reason
        assert "versions/v2" in report.removed
        assert store.versions() == ["v1"]


def test_a_current_that_fails_verify_falls_back_and_previous_is_checked_too(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2", "v3", "v4"], extra=("v5",))
    checked: list[str] = []

    def verify(package: Path) -> None:
        version_id = package.parent.name
        checked.append(version_id)
        if version_id in {"v4", "v3"}:
            raise ArtifactCorruptError(f"digest of {version_id} differs")

    with ModelStore(root) as store:
        report = store.recover(verify)
        assert report.rolled_back_from == "v4"
        assert report.reason is not None
        assert "v4 is failed verification: digest of v4 differs" in report.reason
        # previous (v3) fails too: the newest good one added before v4 is v2, then v1
        assert (report.current, report.previous) == ("v2", "v1")
        assert checked.count("v4") == 1, "verify runs once per version"
        assert "v5" not in checked, "never-promoted newer versions are not fallbacks here"


def test_with_no_usable_version_current_becomes_none(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2"])

    def verify(package: Path) -> None:
        raise RuntimeError("golden vectors differ")

    with ModelStore(root) as store:
        report = store.recover(verify)
        assert (report.current, report.previous) == (None, None)
        assert report.reason is not None and "no usable version left" in report.reason


def test_without_a_usable_previous_the_newest_other_version_serves(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1"], extra=("v2", "v3"))
    with ModelStore(root) as store:
        store.promote("v2", trial_s=5)
        store.confirm_trial()
    shutil.rmtree(root / "versions" / "v2")
    shutil.rmtree(root / "versions" / "v1")
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v3", None)


def test_leftover_temp_trash_and_incomplete_entries_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1"])
    (root / ".current.4242.tmp").write_text("{")
    (root / "versions" / ".trash-v0" / "package").mkdir(parents=True)
    (root / "versions" / "v9" / "package").mkdir(parents=True)
    (root / "versions" / "v1" / ".manifest.json.7.tmp").write_text("")
    with ModelStore(root) as store:
        report = store.recover()
        assert sorted(report.removed) == [".current.4242.tmp", "versions/.trash-v0",
                                          "versions/v1/.manifest.json.7.tmp", "versions/v9"]
        assert report.current == "v1" and report.reason is None
    assert sorted(p.name for p in root.iterdir()) == ["current", "lock", "versions"]
    assert [p.name for p in (root / "versions").iterdir()] == ["v1"]


def test_a_corrupt_pointer_is_treated_as_dangling(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2"])
    (root / "current").write_text('{"version_id": "../../etc"}')
    with ModelStore(root) as store:
        with pytest.raises(StoreCorruptError):
            store.current()
        report = store.recover()
        assert (report.current, report.previous) == ("v1", None)
        assert report.reason is not None and "unreadable" in report.reason


def test_an_interrupted_rollback_is_finished_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, ["v1", "v2", "v3"])
    intent = {"from": "v3", "to": "v2", "previous": "v1", "reason": "guardrail: error rate"}
    (root / "rollback").write_text(json.dumps(intent))
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v2", "v1")
        assert report.rolled_back_from == "v3"
        assert report.reason is not None and "guardrail: error rate" in report.reason
        assert not (root / "rollback").exists()
        last = store.last_rollback()
        assert last is not None and last.reason == "guardrail: error rate"


def test_a_promotion_killed_between_its_pointer_switches_restores_previous_exactly(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    build(root, tmp_path, [], extra=("v1", "v2", "v3", "v4"))
    with ModelStore(root) as store:
        for version_id in ["v1", "v3", "v2"]:  # out of add order: previous is not v1
            store.promote(version_id, trial_s=60)
            store.confirm_trial()
    # promote("v4") died after "previous := current" and before "current := v4"
    trial = {"version_id": "v4", "trial_s": 60, "from_current": "v2", "from_previous": "v3"}
    (root / "trial").write_text(json.dumps(trial))
    (root / "previous").write_text(json.dumps({"version_id": "v2", "since": 99}))
    with ModelStore(root) as store:
        report = store.recover()
        assert (report.current, report.previous) == ("v2", "v3")
        assert report.rolled_back_from is None
        assert report.reason == "promotion of v4 did not complete"
        assert store.trial() is None and store.last_rollback() is None
