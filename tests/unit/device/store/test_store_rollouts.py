"""The rollout that promoted each stored version: kept in the pointers, moved with them by
promotions, rollbacks and recovery, and read back after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.device.store.store import ModelStore


def add(store: ModelStore, tmp_path: Path, version_id: str) -> None:
    staged = tmp_path / "staging" / version_id
    staged.mkdir(parents=True)
    (staged / "model.json").write_text(json.dumps({"version": version_id}))
    store.add(staged, version_id=version_id, manifest={"version": version_id})


def test_the_promoting_rollout_is_kept_across_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with ModelStore(root) as store:
        add(store, tmp_path, "v1")
        store.promote("v1", trial_s=10)
        store.confirm_trial()
        assert store.current_rollout() is None, "promoted without a rollout"
        add(store, tmp_path, "v2")
        store.promote("v2", trial_s=10, rollout_id="r-a")
        assert store.current_rollout() == "r-a"
        assert store.trial() is not None and store.trial().rollout_id == "r-a"  # type: ignore[union-attr]
        store.confirm_trial()
    pointer = json.loads((root / "current").read_text())
    assert pointer["version_id"] == "v2" and pointer["rollout_id"] == "r-a"
    assert "rollout_id" not in json.loads((root / "previous").read_text())
    with ModelStore(root) as store:
        report = store.recover()
        assert report.reason is None
        assert (store.current(), store.current_rollout()) == ("v2", "r-a")


def test_a_rollback_during_a_trial_restores_the_rollout_of_the_version_before(
        tmp_path: Path) -> None:
    with ModelStore(tmp_path / "store") as store:
        for version_id, rollout in (("v1", "r-1"), ("v2", "r-2"), ("v3", "r-3")):
            add(store, tmp_path, version_id)
            store.promote(version_id, trial_s=10, rollout_id=rollout)
            if version_id != "v3":
                store.confirm_trial()
        done = store.rollback("guardrail")
        assert (done.to_version, done.to_rollout) == ("v2", "r-2")
        assert (done.previous, done.previous_rollout) == ("v1", "r-1")
        assert (store.current(), store.current_rollout()) == ("v2", "r-2")
        assert store.last_rollback() == done
        # After a confirmed promotion: current := previous, with previous's rollout id.
        done = store.rollback("fleet rollback of r-2")
        assert (store.current(), store.current_rollout()) == ("v1", "r-1")
        assert done.to_rollout == "r-1"


def test_a_restart_during_a_trial_restores_the_rollout_of_the_version_before(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    with ModelStore(root) as store:
        add(store, tmp_path, "v1")
        store.promote("v1", trial_s=10, rollout_id="r-a")
        store.confirm_trial()
        add(store, tmp_path, "v2")
        store.promote("v2", trial_s=600, rollout_id="r-b")
    with ModelStore(root) as store:
        report = store.recover()
        assert report.rolled_back_from == "v2"
        assert (store.current(), store.current_rollout()) == ("v1", "r-a")


def test_pointer_files_without_a_rollout_read_as_none(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with ModelStore(root) as store:
        add(store, tmp_path, "v1")
        store.promote("v1", trial_s=10)
        store.confirm_trial()
    # As written before rollouts were kept: no key at all.
    (root / "current").write_text(json.dumps({"version_id": "v1", "since": 3}))
    with ModelStore(root) as store:
        assert store.recover().reason is None
        assert (store.current(), store.current_rollout()) == ("v1", None)


def test_a_malformed_rollout_id_is_refused(tmp_path: Path) -> None:
    with ModelStore(tmp_path / "store") as store:
        add(store, tmp_path, "v1")
        with pytest.raises(ValueError, match="not a protocol name"):
            store.promote("v1", trial_s=10, rollout_id="../etc")
        assert store.current() is None and store.trial() is None
