"""Crash safety of the model store: SIGKILL at every crash point it uses, then recover.

A child process runs a list of store operations with ``EDGE_AGENT_CRASH_AT`` set and dies
by SIGKILL exactly there. The parent then recovers and checks that the store is
consistent (pointers on complete, verified versions; no temp, trash or incomplete
entries; a second recovery finds nothing to do; the next promotion works) and that
the interrupted operation looks atomic: the recovered pointers are those of a run
that stopped just before it, or of one that finished it (each followed by a
recovery), and the versions lie between the two.

Run as a script (``python test_store_crash.py WORK OPS_JSON``) this file is the child.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from agent.core.crash import CRASH_ENV, CRASH_POINTS
from agent.device.store import durable as durable_module
from agent.device.store import store as store_module
from agent.device.store.store import ModelStore, Rollback

ROOT = Path(__file__).resolve().parents[2]  # also run as a script: no helpers import
KEEP = 3
STORE_POINTS = ("after-version-copy", "before-verified-marker", "before-pointer-rename",
                "after-rename-before-dir-fsync", "after-trial-marker", "after-rollback-intent",
                "mid-prune")
Hits = list[tuple[int, str]]  # (op index, crash point), in order reached
Op = list[Any]  # ["add", id] ["promote", id] ["confirm"] ["rollback", why] ["prune"] ["restart"]

SCENARIO: list[Op] = [
    ["add", "v1"], ["promote", "v1"], ["confirm"],
    ["add", "v2"], ["promote", "v2"], ["confirm"],
    ["add", "v3"], ["promote", "v3"], ["rollback", "p99 latency 3x"],
    ["add", "v4"], ["promote", "v4"], ["restart"],  # restart fails the trial of v4
    ["add", "v5"], ["prune"], ["promote", "v5"], ["confirm"], ["rollback", "cloud rollback"],
    ["add", "v6"], ["prune"],
]


# -- the operations, shared by the child and the in-process reference runs ------------

def fake_package(staging: Path, version_id: str) -> Path:
    package = staging / version_id
    (package / "dlr" / "rasp4b-aarch64").mkdir(parents=True)
    (package / "model.json").write_text(json.dumps({"version": version_id}))
    (package / "dlr" / "rasp4b-aarch64" / "compiled.params").write_bytes(
        version_id.encode() * 500)
    return package


def verify_fake(package: Path) -> None:
    version_id = package.parent.name
    if json.loads((package / "model.json").read_text()) != {"version": version_id}:
        raise ValueError(f"{package}: model.json is not that of {version_id}")
    params = (package / "dlr" / "rasp4b-aarch64" / "compiled.params").read_bytes()
    if params != version_id.encode() * 500:
        raise ValueError(f"{package}: compiled.params differs")


def open_store(work: Path) -> ModelStore:
    store = ModelStore(work / "store", keep=KEEP)
    store.recover(verify_fake)
    return store


def apply(store: ModelStore, work: Path, op: Op) -> ModelStore:
    kind = op[0]
    if kind == "add":
        store.add(fake_package(work / "staging", op[1]), version_id=op[1],
                  manifest={"version": op[1]})
    elif kind == "promote":
        # Every promotion names a rollout, so the pointers' rollout ids are checked for
        # atomicity at every crash point too.
        store.promote(op[1], trial_s=300.0, rollout_id=f"ro-{op[1]}")
    elif kind == "confirm":
        store.confirm_trial()
    elif kind == "rollback":
        store.rollback(op[1])
    elif kind == "prune":
        store.prune()
    elif kind == "restart":
        store.close()
        return open_store(work)
    else:
        raise AssertionError(f"unknown op {op}")
    return store


def run_ops(work: Path, ops: list[Op], done: Callable[[int], None] = lambda _i: None) -> None:
    store = open_store(work)
    try:
        for index, op in enumerate(ops):
            store = apply(store, work, op)
            done(index)
    finally:
        store.close()


@dataclass(frozen=True)
class State:
    current: str | None
    previous: str | None
    versions: frozenset[str]
    last_rollback: Rollback | None = None
    current_rollout: str | None = None
    previous_rollout: str | None = None


def rollouts(store: ModelStore) -> tuple[str | None, str | None]:
    return store.current_rollout(), store._pointer_rollout("previous")


def state_after(work: Path, ops: list[Op]) -> State:
    """Run ``ops`` cleanly, then restart (recover) as the agent would."""
    run_ops(work, ops)
    with ModelStore(work / "store", keep=KEEP) as store:
        report = store.recover(verify_fake)
        return State(report.current, report.previous, frozenset(store.versions()),
                     store.last_rollback(), *rollouts(store))


class Recorder:
    """Stands in for crash_point: records (op index, point) in order of arrival."""

    def __init__(self) -> None:
        self.op_index = 0
        self.hits: Hits = []

    def __call__(self, name: str) -> None:
        assert name in CRASH_POINTS
        self.hits.append((self.op_index, name))

    def patches(self) -> tuple[Any, Any]:
        return (mock.patch.object(store_module, "crash_point", self),
                mock.patch.object(durable_module, "crash_point", self))


def recorded_run(work: Path, ops: list[Op]) -> Hits:
    recorder = Recorder()
    first, second = recorder.patches()
    with first, second:
        store = open_store(work)
        try:
            for index, op in enumerate(ops):
                recorder.op_index = index
                store = apply(store, work, op)
        finally:
            store.close()
    return recorder.hits


def random_ops(work: Path, rng: random.Random, length: int) -> tuple[list[Op], Hits]:
    """A random valid sequence, chosen against a live store, and the crash points it hits."""
    recorder = Recorder()
    ops: list[Op] = []
    first, second = recorder.patches()
    with first, second:
        store = open_store(work)
        try:
            for index in range(length):
                versions, current = store.versions(), store.current()
                on_trial = store.trial() is not None
                choices: list[Op] = [["add", f"r{index}"]] * 3 + [["restart"]]
                choices += [["promote", v] for v in versions if v != current and not on_trial]
                if on_trial:
                    choices += [["confirm"]] * 3
                if on_trial or store.previous() is not None:
                    choices.append(["rollback", f"random rollback {index}"])
                if len(versions) > KEEP:
                    choices += [["prune"]] * 2
                op = rng.choice(choices)
                recorder.op_index = index
                store = apply(store, work, op)
                ops.append(op)
        finally:
            store.close()
    return ops, recorder.hits


# -- the crash and the checks ------------------------------------------------------------

def crash_child(work: Path, ops: list[Op], spec: str) -> int:
    """Run ``ops`` in a child that must die by SIGKILL at ``spec``; returns how many ops
    it completed."""
    env = {**os.environ, CRASH_ENV: spec}
    proc = subprocess.run([sys.executable, __file__, str(work), json.dumps(ops)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (spec, proc.returncode, proc.stderr)
    return len(proc.stdout.splitlines())


def check_recovered(work: Path, before: State, after: State) -> None:
    root = work / "store"
    with ModelStore(root, keep=KEEP) as store:
        report = store.recover(verify_fake)
        current, previous = report.current, report.previous
        assert (current, previous) == (store.current(), store.previous())
        versions = frozenset(store.versions())
        allowed = {(s.current, s.previous, s.last_rollback, s.current_rollout,
                    s.previous_rollout) for s in (before, after)}
        assert (current, previous, store.last_rollback(), *rollouts(store)) in allowed, (
            "the interrupted operation was not atomic, or its rollback record was lost")
        assert before.versions & after.versions <= versions <= before.versions | after.versions

        assert current is None or current != previous
        for version_id in versions:
            verify_fake(store.path(version_id))
            assert store.manifest(version_id) == {"version": version_id}
            entries = sorted(p.name for p in (root / "versions" / version_id).iterdir())
            assert entries == ["VERIFIED", "manifest.json", "package"]
        assert {current, previous} - {None} <= versions
        assert sorted(p.name for p in (root / "versions").iterdir()) == sorted(versions)
        assert {p.name for p in root.iterdir()} <= {
            "lock", "current", "previous", "last_rollback.json", "versions"}, "leftovers"

        again = store.recover(verify_fake)
        assert (again.reason, again.removed, again.current) == (None, (), current)

        store.add(fake_package(work / "staging-next", "next"), version_id="next",
                  manifest={"version": "next"})
        current_rollout = store.current_rollout()
        store.promote("next", trial_s=5, rollout_id="ro-next")
        store.confirm_trial()
        assert (store.current(), store.previous()) == ("next", current)
        assert rollouts(store) == ("ro-next", current_rollout)


def crash_and_check(work: Path, ops: list[Op], hits: Hits, hit: int,
                    reference: Callable[[int], State]) -> None:
    op_index, point = hits[hit]
    occurrence = sum(1 for _i, name in hits[: hit + 1] if name == point)
    spec = f"{point}:{occurrence}"
    completed = crash_child(work, ops, spec)
    assert completed == op_index, f"{spec} should fire during op {op_index} {ops[op_index]}"
    check_recovered(work, reference(op_index), reference(op_index + 1))


# -- the tests ----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_crash_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Hits, list[State]]:
    """The scenario's crash-point hits, and the reference state after each prefix."""
    base = tmp_path_factory.mktemp("scenario")
    hits = recorded_run(base / "recorded", SCENARIO)
    states = [state_after(base / f"prefix-{k}", SCENARIO[:k]) for k in range(len(SCENARIO) + 1)]
    return hits, states


def test_the_scenario_reaches_every_crash_point_of_the_store(
        scenario: tuple[Hits, list[State]]) -> None:
    hits, states = scenario
    assert {name for _i, name in hits} == set(STORE_POINTS)
    assert set(STORE_POINTS) <= set(CRASH_POINTS)
    # v2 comes back with the rollout that promoted it; v1, found by search, without one.
    assert states[-1] == State("v2", "v1", frozenset({"v1", "v2", "v6"}), Rollback(
        from_version="v5", to_version="v2", previous="v1", reason="cloud rollback",
        to_rollout="ro-v2"), current_rollout="ro-v2")


@pytest.mark.parametrize("point", STORE_POINTS)
def test_a_kill_at_each_occurrence_of_each_point_recovers_consistently(
        point: str, scenario: tuple[Hits, list[State]], tmp_path: Path) -> None:
    hits, states = scenario
    chosen = [index for index, (_op, name) in enumerate(hits) if name == point]
    assert chosen
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(crash_and_check, tmp_path / f"hit-{hit}", SCENARIO, hits, hit,
                               states.__getitem__) for hit in chosen]
        for future in futures:
            future.result()


def random_kill(seed: int, work: Path) -> None:
    rng = random.Random(seed)
    ops, hits = random_ops(work / "generated", rng, length=rng.randint(8, 24))
    assert hits, "every sequence adds a version, so it reaches a crash point"
    hit = rng.randrange(len(hits))
    crash_and_check(work / "crashed", ops, hits, hit,
                    lambda k: state_after(work / f"prefix-{k}", ops[:k]))


@pytest.mark.parametrize("seed", range(10))
def test_seeded_random_kills_recover_consistently(seed: int, tmp_path: Path) -> None:
    random_kill(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 150))
def test_seeded_random_kills_recover_consistently_50_cycles(seed: int, tmp_path: Path) -> None:
    random_kill(seed, tmp_path)


if __name__ == "__main__":
    def _report(index: int) -> None:
        print(f"done {index}", flush=True)

    run_ops(Path(sys.argv[1]), json.loads(sys.argv[2]), _report)
