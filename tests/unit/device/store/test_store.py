"""The model store's operations: add, promote, trial, rollback, prune, the owner lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.core.errors import AgentError
from agent.device.store.store import (
    InvalidVersionIdError,
    ModelStore,
    NoTrialError,
    RollbackUnavailableError,
    StoreError,
    StoreLockedError,
    TrialPendingError,
    UnknownVersionError,
    VersionExistsError,
)

ROOT = REPO_ROOT


def staged(tmp_path: Path, version_id: str) -> Path:
    """A fake package directory, as staging leaves it."""
    package = tmp_path / "staging" / version_id
    (package / "dlr" / "ml_x86_64-x86_64").mkdir(parents=True)
    (package / "model.json").write_text(json.dumps({"version": version_id}))
    (package / "dlr" / "ml_x86_64-x86_64" / "compiled.so").write_bytes(version_id.encode() * 64)
    return package


def add(store: ModelStore, tmp_path: Path, version_id: str) -> Path:
    return store.add(staged(tmp_path, version_id), version_id=version_id,
                     manifest={"version": version_id, "sha256": "00" * 32})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ModelStore]:
    with ModelStore(tmp_path / "store") as store:
        store.recover()
        yield store


def test_add_moves_the_package_in_and_marks_it_verified_last(store: ModelStore,
                                                             tmp_path: Path) -> None:
    source = staged(tmp_path, "v1")
    path = store.add(source, version_id="v1", manifest={"version": "v1", "size": 3})
    assert not source.exists(), "moved, not copied"
    assert path == store.root / "versions" / "v1" / "package" == store.path("v1")
    assert (path / "dlr" / "ml_x86_64-x86_64" / "compiled.so").read_bytes() == b"v1" * 64
    assert store.manifest("v1") == {"version": "v1", "size": 3}
    assert (path.parent / "VERIFIED").is_file()
    assert store.versions() == ["v1"]
    assert store.current() is None and store.previous() is None


def test_versions_are_listed_in_the_order_they_were_added(store: ModelStore,
                                                          tmp_path: Path) -> None:
    for version_id in ["b", "c", "a", "10", "9"]:
        add(store, tmp_path, version_id)
    assert store.versions() == ["b", "c", "a", "10", "9"]


def test_add_refuses_duplicates_bad_ids_and_non_json_manifests(store: ModelStore,
                                                               tmp_path: Path) -> None:
    add(store, tmp_path, "v1")
    with pytest.raises(VersionExistsError):
        add(store, tmp_path / "again", "v1")
    package = staged(tmp_path / "bad", "ok")
    for bad in ["", ".hidden", "../v1", "a/b", "x" * 200, ".trash-v1"]:
        with pytest.raises(InvalidVersionIdError):
            store.add(package, version_id=bad, manifest={})
    with pytest.raises(StoreError, match="not JSON"):
        store.add(staged(tmp_path, "v2"), version_id="v2", manifest={"x": object()})
    with pytest.raises(StoreError, match="not a directory"):
        store.add(tmp_path / "nowhere", version_id="v3", manifest={})
    assert store.versions() == ["v1"]
    assert issubclass(StoreError, AgentError)


def test_promote_confirm_and_promote_again(store: ModelStore, tmp_path: Path) -> None:
    add(store, tmp_path, "v1")
    add(store, tmp_path, "v2")
    store.promote("v1", trial_s=30)
    assert (store.current(), store.previous()) == ("v1", None)
    trial = store.trial()
    assert trial is not None and trial.version_id == "v1" and trial.trial_s == 30
    assert store.confirm_trial() == "v1"
    assert store.trial() is None
    store.promote("v2", trial_s=30)
    assert (store.current(), store.previous()) == ("v2", "v1")
    store.confirm_trial()
    pointer = json.loads((store.root / "current").read_text())
    assert pointer["version_id"] == "v2" and isinstance(pointer["since"], int)


def test_promote_refuses_unknown_versions_a_running_trial_and_bad_durations(
        store: ModelStore, tmp_path: Path) -> None:
    add(store, tmp_path, "v1")
    add(store, tmp_path, "v2")
    with pytest.raises(UnknownVersionError):
        store.promote("v9", trial_s=1)
    for bad in [0, -1, float("nan"), float("inf")]:
        with pytest.raises(ValueError):
            store.promote("v1", trial_s=bad)
    store.promote("v1", trial_s=1)
    with pytest.raises(TrialPendingError):
        store.promote("v2", trial_s=1)
    store.confirm_trial()
    with pytest.raises(NoTrialError):
        store.confirm_trial()
    with pytest.raises(StoreError, match="already current"):
        store.promote("v1", trial_s=1)


def test_trial_time_counts_on_the_injected_monotonic_clock(tmp_path: Path) -> None:
    now = [1000.0]
    with ModelStore(tmp_path / "store", clock=lambda: now[0]) as store:
        add(store, tmp_path, "v1")
        assert store.trial_remaining_s() is None
        store.promote("v1", trial_s=60)
        now[0] += 45
        assert store.trial_remaining_s() == pytest.approx(15)
        now[0] += 100
        assert store.trial_remaining_s() == 0.0
    trial = json.loads((tmp_path / "store" / "trial").read_text())
    assert trial == {"version_id": "v1", "trial_s": 60, "from_current": None,
                     "from_previous": None}, "a duration, never a wall-clock deadline"
    with ModelStore(tmp_path / "store") as store:
        assert store.trial_remaining_s() == 0.0, "a trial from another process has no time left"


def test_rollback_during_a_trial_restores_the_pointers_before_the_promotion(
        store: ModelStore, tmp_path: Path) -> None:
    for version_id in ["v1", "v2", "v3"]:
        add(store, tmp_path, version_id)
        store.promote(version_id, trial_s=10)
        if version_id != "v3":
            store.confirm_trial()
    assert (store.current(), store.previous()) == ("v3", "v2")
    done = store.rollback("p99 latency 3x the baseline")
    assert (done.from_version, done.to_version, done.previous) == ("v3", "v2", "v1")
    assert (store.current(), store.previous()) == ("v2", "v1")
    assert store.trial() is None and store.trial_remaining_s() is None
    assert store.last_rollback() == done
    record = json.loads((store.root / "last_rollback.json").read_text())
    assert record["reason"] == "p99 latency 3x the baseline" and record["from"] == "v3"


def test_rollback_after_confirmation_goes_to_previous_and_the_one_added_before(
        store: ModelStore, tmp_path: Path) -> None:
    for version_id in ["v1", "v2", "v3", "v4"]:
        add(store, tmp_path, version_id)
    store.promote("v2", trial_s=10)
    store.confirm_trial()
    store.promote("v4", trial_s=10)
    store.confirm_trial()
    store.rollback("cloud said so")
    assert (store.current(), store.previous()) == ("v2", "v1")
    store.rollback("again")
    assert (store.current(), store.previous()) == ("v1", None)
    with pytest.raises(RollbackUnavailableError):
        store.rollback("once more")
    assert store.current() == "v1"


def test_rolling_back_the_first_trial_leaves_no_current(store: ModelStore,
                                                        tmp_path: Path) -> None:
    add(store, tmp_path, "v1")
    store.promote("v1", trial_s=10)
    store.rollback("crashed on load")
    assert (store.current(), store.previous()) == (None, None)
    assert store.versions() == ["v1"]


def test_prune_keeps_the_newest_and_never_current_previous_or_a_trials_pointers(
        tmp_path: Path) -> None:
    with ModelStore(tmp_path / "store", keep=3) as store:
        for version_id in ["v1", "v2", "v3", "v4", "v5", "v6"]:
            add(store, tmp_path, version_id)
        store.promote("v1", trial_s=10)
        store.confirm_trial()
        store.promote("v2", trial_s=10)
        store.confirm_trial()
        assert store.prune() == ["v3", "v4", "v5"]
        assert store.versions() == ["v1", "v2", "v6"]
        store.promote("v6", trial_s=10)  # on trial: v1 must stay to roll back to
        assert store.prune() == []
        store.confirm_trial()
        add(store, tmp_path, "v7")
        assert store.prune() == ["v1"]
        assert store.versions() == ["v2", "v6", "v7"]
        assert not [p for p in (store.root / "versions").iterdir() if p.name.startswith(".")]
    with ModelStore(tmp_path / "one", keep=1) as store:
        for version_id in ["a", "b", "c"]:
            add(store, tmp_path / "one-staging", version_id)
        store.promote("a", trial_s=1)
        store.confirm_trial()
        store.promote("b", trial_s=1)
        store.confirm_trial()
        assert store.prune() == ["c"], "current and previous survive even beyond keep"


def test_prune_during_a_trial_keeps_the_version_a_rollback_would_restore(
        tmp_path: Path) -> None:
    with ModelStore(tmp_path / "store", keep=2) as store:
        for version_id in ["v1", "v2", "v3"]:
            add(store, tmp_path, version_id)
            store.promote(version_id, trial_s=10)
            if version_id != "v3":
                store.confirm_trial()
        assert store.prune() == [], "v1 is previous again if the trial of v3 fails"
        store.rollback("trial failed")
        assert (store.current(), store.previous()) == ("v2", "v1")
        store.promote("v3", trial_s=10)
        store.confirm_trial()
        assert store.prune() == ["v1"]


def test_a_second_owner_is_refused_in_this_process_and_another(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with ModelStore(root), pytest.raises(StoreLockedError, match="owned by another process"):
        ModelStore(root)
    ModelStore(root).close()  # released on close
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from agent.device.store.store import ModelStore
        store = ModelStore(Path({str(root)!r}))
        print("owned", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == "owned\n"
        with pytest.raises(StoreLockedError, match=f"pid {child.pid}"):
            ModelStore(root)
    finally:
        child.communicate("\n", timeout=30)
    ModelStore(root).close()


def test_a_closed_store_refuses_changes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.prune()
