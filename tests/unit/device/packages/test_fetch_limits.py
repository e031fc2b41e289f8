"""A fetch under attack: local paths outside the package folders (``/etc/shadow``,
``/dev/zero``, a FIFO, ``/proc/self/mem``, links and ``..`` out of an allowed folder), a
server that trickles a 1 GiB body or stalls after the headers, a cancel mid-download;
and the settings that carry these limits (``packageLimits``, ``packageDirs``) and decide
which command cancels a stage.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from fuzz import BRIEF, LONG
from hostile_http import GIB, HostileServer, wait_closed
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import ConfigError
from agent.device.app.config import load_config
from agent.device.app.stage_control import INBOX, RunningStage, package_dirs, supersedes
from agent.device.packages.errors import (
    FetchCancelledError,
    FetchError,
    FetchLimitError,
    PackageSourceNotAllowedError,
)
from agent.device.packages.fetch import fetch
from agent.device.packages.limits import PackageLimits
from agent.wire.commands import Command, RollbackCommand, StageCommand, StatusCommand

DATA = os.urandom(50_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed package folder holding one good package, and the work folder."""
    allowed = tmp_path / "inbox"
    allowed.mkdir()
    (allowed / "good.tar.gz").write_bytes(DATA)
    work = tmp_path / "work"
    work.mkdir()
    return allowed, work


def _fetch(url: str, work: Path, allowed: list[Path] | None, **kwargs: object) -> object:
    return fetch(url, work / "package.tar.gz", expected_sha256=None, max_bytes=2 * GIB,
                 timeout_s=30, allowed_dirs=allowed, **kwargs)  # type: ignore[arg-type]


def test_a_package_in_an_allowed_folder_is_read(folders: tuple[Path, Path]) -> None:
    allowed, work = folders
    for url in ((allowed / "good.tar.gz").as_uri(), str(allowed / "good.tar.gz"),
                f"file://localhost{allowed / 'good.tar.gz'}"):
        result = fetch(url, work / "package.tar.gz", expected_sha256=SHA, max_bytes=10**6,
                       timeout_s=5, allowed_dirs=[allowed])
        assert result.sha256 == SHA and result.size == len(DATA)


def _hostile(tmp_path: Path, allowed: Path) -> dict[str, tuple[str, str]]:
    """Each attack: its URL and a key part of the refusal."""
    fifo = allowed / "fifo.tar.gz"
    os.mkfifo(fifo)
    (allowed / "shadow.tar.gz").symlink_to("/etc/shadow")
    (tmp_path / "outside.tar.gz").write_bytes(DATA)
    (allowed / "out.tar.gz").symlink_to(tmp_path / "outside.tar.gz")
    (allowed / "sub").symlink_to(tmp_path)  # a link to a folder above the allowed one
    (allowed / "dir.tar.gz").mkdir()
    inside = allowed.as_uri()
    return {
        "/etc/shadow": ("file:///etc/shadow", "outside the package folders"),
        "/dev/zero": ("file:///dev/zero", "never a package's place"),
        "/proc/self/mem": ("file:///proc/self/mem", "never a package's place"),
        "a FIFO": (fifo.as_uri(), "is a FIFO, not a regular file"),
        "a link to /etc/shadow": ((allowed / "shadow.tar.gz").as_uri(),
                                  "resolves to /etc/shadow, outside"),
        "a link out of the folder": ((allowed / "out.tar.gz").as_uri(), "outside"),
        "a linked folder": (f"{inside}/sub/outside.tar.gz", "outside"),
        "a .. escape": (f"{inside}/../outside.tar.gz", "outside"),
        "an encoded .. escape": (f"{inside}/%2e%2e/%2e%2e/etc/passwd", "outside"),
        "a NUL byte": (f"{inside}/good.tar.gz%00.png", "NUL byte"),
        "another host": (f"file://evil.example{allowed / 'good.tar.gz'}",
                         "must name a path on this device"),
        "a directory": ((allowed / "dir.tar.gz").as_uri(), "is a directory"),
        "the folder itself": (inside, "outside"),
        "a bare path outside": ("/etc/passwd", "outside"),
    }


def test_every_local_source_outside_the_folders_is_refused_by_name(
        folders: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, work = folders
    for attack, (url, expected) in _hostile(tmp_path, allowed).items():
        started = time.monotonic()
        with pytest.raises(PackageSourceNotAllowedError) as caught:
            _fetch(url, work, [allowed])
        assert expected in str(caught.value), (attack, str(caught.value))
        assert time.monotonic() - started < 2, f"{attack}: a FIFO or device must not block"
        assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)
        assert list(work.iterdir()) == [], f"{attack} left a file behind"


def test_devices_fifos_and_proc_are_refused_even_without_folders(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for url in ("file:///dev/zero", "/dev/urandom", "file:///proc/self/mem",
                "/proc/self/environ", "/sys/kernel/notes", str(fifo)):
        with pytest.raises(PackageSourceNotAllowedError):
            _fetch(url, tmp_path, None)


def test_an_empty_list_of_folders_allows_no_local_file(folders: tuple[Path, Path]) -> None:
    allowed, work = folders
    with pytest.raises(PackageSourceNotAllowedError, match=r"package folders \(none\)"):
        _fetch((allowed / "good.tar.gz").as_uri(), work, [])


_SEGMENTS = st.sampled_from(["..", ".", "good.tar.gz", "sub", "out.tar.gz", "fifo.tar.gz",
                             "%2e%2e", "%00", "etc", "shadow", "dir.tar.gz", "", "x%2fy",
                             "%0a", "inbox", "~"])


def _fuzz_local(root: Path, segments: list[str], bare: bool) -> None:
    allowed, work = root / "inbox", root / "work"
    path = "/".join([str(allowed), *segments])
    url = urllib.parse.unquote(path) if bare else "file://" + path
    try:
        result = fetch(url, work / "p.tar.gz", expected_sha256=None, max_bytes=10**6,
                       timeout_s=5, allowed_dirs=[allowed])
    except FetchError:
        assert not any(p.name.endswith(".partial") for p in work.iterdir())
        return
    # Whatever was read came from inside the folder: the one regular file there.
    assert result.sha256 == SHA


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-local")
    allowed = root / "inbox"
    allowed.mkdir()
    (root / "work").mkdir()
    _hostile(root, allowed)
    (allowed / "good.tar.gz").write_bytes(DATA)
    return root


@BRIEF
@given(segments=st.lists(_SEGMENTS, max_size=6), bare=st.booleans())
def test_fuzz_local_paths_read_only_inside_the_folders(fuzz_root: Path, segments: list[str],
                                                       bare: bool) -> None:
    _fuzz_local(fuzz_root, segments, bare)


@pytest.mark.slow
@LONG
@given(segments=st.lists(_SEGMENTS, max_size=10), bare=st.booleans())
def test_fuzz_local_paths_read_only_inside_the_folders_long(
        fuzz_root: Path, segments: list[str], bare: bool) -> None:
    _fuzz_local(fuzz_root, segments, bare)


# ---- hostile servers ----------------------------------------------------------------------

def test_a_trickle_is_cut_off_at_the_minimum_rate(tmp_path: Path) -> None:
    with HostileServer(trickle_bytes=100, trickle_every_s=0.25) as server:
        started = time.monotonic()
        with pytest.raises(FetchLimitError) as caught:
            _fetch(server.url("trickle"), tmp_path, None, min_bytes_per_s=1024,
                   rate_window_s=1.5, deadline_s=60)
        took = time.monotonic() - started
        assert caught.value.limit == "fetch_min_bytes_per_s" and caught.value.value == 1024
        assert "limit fetch_min_bytes_per_s=1024" in str(caught.value)
        assert 1.4 < took < 5, f"cut off after {took:.1f} s (window 1.5 s)"
        assert wait_closed(server), "the connection was closed"
    assert list(tmp_path.iterdir()) == []


def test_a_stall_after_the_headers_is_cut_off_within_a_window(tmp_path: Path) -> None:
    with HostileServer() as server:
        started = time.monotonic()
        with pytest.raises(FetchLimitError, match="fetch_min_bytes_per_s"):
            _fetch(server.url("stall"), tmp_path, None, min_bytes_per_s=1024,
                   rate_window_s=1.0, deadline_s=60)  # the per-read timeout is 30 s
        assert time.monotonic() - started < 4
        assert server.connections == 1, "a stall is not retried"
        assert wait_closed(server)
    assert list(tmp_path.iterdir()) == []


def test_a_steady_but_endless_body_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    with HostileServer(steady_bytes_per_s=64 * 1024) as server:
        started = time.monotonic()
        with pytest.raises(FetchLimitError) as caught:
            _fetch(server.url("steady"), tmp_path, None, min_bytes_per_s=1024,
                   rate_window_s=1.0, deadline_s=2.0)
        took = time.monotonic() - started
        assert caught.value.limit == "fetch_deadline_s"
        assert "not downloaded within 2 s" in str(caught.value)
        assert 1.9 < took < 5, took
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["stall", "trickle"])
def test_a_cancel_stops_a_stalled_or_slow_download_within_a_second(tmp_path: Path,
                                                                  path: str) -> None:
    cancel = threading.Event()
    with HostileServer() as server:
        timer = threading.Timer(0.5, cancel.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(FetchCancelledError, match="cancelled by a newer command"):
            _fetch(server.url(path), tmp_path, None, cancel=cancel, deadline_s=60)
        took = time.monotonic() - started
        assert took < 1.5, f"noticed {took - 0.5:.2f} s after the cancel"
        assert wait_closed(server)
    assert list(tmp_path.iterdir()) == []


def test_a_cancel_ends_the_pause_between_retries(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    started = time.monotonic()
    with pytest.raises(FetchCancelledError):  # nothing listens there: each try fails at once
        _fetch("http://127.0.0.1:9/p.tar.gz", tmp_path, None, cancel=cancel, retries=5)
    assert time.monotonic() - started < 1


# ---- the settings -------------------------------------------------------------------------

def test_package_limits_are_agent_settings_with_camel_case_keys() -> None:
    config = load_config({"thingName": "t", "packageLimits": {
        "fetchDeadlineS": 5, "fetchMinBytesPerS": 10.0, "maxMembers": 9}})
    assert config.package_limits == PackageLimits(fetch_deadline_s=5, fetch_min_bytes_per_s=10,
                                                  max_members=9)
    assert config.merged({"rateHz": 1}).package_limits == config.package_limits
    assert load_config({"thingName": "t"}).package_limits == PackageLimits()
    with pytest.raises(ConfigError, match=r"packageLimits\.fetchDeadline"):
        load_config({"thingName": "t", "packageLimits": {"fetchDeadline": 5}})
    with pytest.raises(ConfigError, match="fetch_rate_window_s must be >= 1"):
        load_config({"thingName": "t", "packageLimits": {"fetchRateWindowS": 0}})


def test_the_default_package_folders_are_the_inbox_and_the_initial_package_folder(
        tmp_path: Path) -> None:
    package = tmp_path / "component" / "digits.tar.gz"
    package.parent.mkdir()
    package.write_bytes(b"x")
    base = {"thingName": "t", "stateDir": str(tmp_path / "state")}
    assert package_dirs(load_config(base)) == (tmp_path / "state" / INBOX,)
    assert package_dirs(load_config({**base, "initialPackage": str(package)})) == (
        tmp_path / "state" / INBOX, package.parent)
    assert package_dirs(load_config({**base, "initialPackage": str(package.parent)})) == (
        tmp_path / "state" / INBOX, package.parent)
    assert package_dirs(load_config({**base, "packageDirs": []})) == ()
    assert package_dirs(load_config({**base, "packageDirs": ["rel"]})) == (Path.cwd() / "rel",)


def _command(cls: type[Command], rollout: str, seq: int, **args: object) -> Command:
    fields: dict[str, object] = {"rollout_id": rollout, "rollout_seq": seq, "issued_at": 0,
                                 "target": {"kind": "thing", "name": "t"}}
    if args:
        fields["args"] = args
    return cls(**fields)


def _stage(rollout: str, seq: int) -> Command:
    return _command(StageCommand, rollout, seq, url="https://example.com/p.tar.gz",
                    sha256="0" * 64, version="m-2")


def test_what_supersedes_a_running_stage() -> None:
    running = _stage("r1", 3)
    assert supersedes(_stage("r2", 1), running), "another rollout's stage"
    assert supersedes(_stage("r1", 4), running), "a newer stage of the same rollout"
    assert supersedes(_command(RollbackCommand, "r1", 4), running), "its rollout's rollback"
    assert not supersedes(_stage("r1", 3), running), "not newer"
    assert not supersedes(_stage("r1", 2), running), "older"
    assert not supersedes(running, running), "itself, sent again"
    assert not supersedes(_command(RollbackCommand, "r2", 9), running), "another's rollback"
    assert not supersedes(_command(StatusCommand, "r1", 9), running)


def test_a_running_stage_is_cancelled_once_and_answers_who_cancelled_it() -> None:
    stages = RunningStage()
    running, newer = _stage("r1", 1), _stage("r2", 1)
    assert not stages.interrupt(newer), "no stage runs"
    with stages.running(running) as cancel:
        assert not stages.interrupt(_command(RollbackCommand, "r9", 1))
        assert not cancel.is_set()
        assert stages.interrupt(newer) and cancel.is_set()
        assert not stages.interrupt(_stage("r3", 1)), "already cancelled"
    result = stages.cancelled(FetchCancelledError("p: cancelled by a newer command"))
    assert result.outcome == "failed" and result.reason.startswith("FetchCancelledError: ")
    assert dict(result.data) == {"code": "fetch_cancelled", "cancelled_by": newer.command_id,
                                 "by_action": "stage", "by_rollout_id": "r2",
                                 "by_rollout_seq": 1}
    assert not stages.interrupt(_stage("r4", 1)), "the stage ended"
