"""Staging: a good package is accepted; every bad one is refused with its typed error
and leaves nothing in the work dir. The golden-vector cases are in test_staging_golden."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from package_support import (
    HOST_ARTIFACT,
    Keys,
    build,
    file_member,
    leftovers,
    make_keys,
    members,
    repack,
    special_member,
)

from agent.core.errors import AgentError, ArchitectureMismatchError, TargetMismatchError
from agent.device.packages.errors import (
    BadPackageSignatureError,
    DigestMismatchError,
    MissingFileError,
    PackageError,
    PackageFormatError,
    RevokedPackageKeyError,
    TruncatedArchiveError,
    UnknownPackageKeyError,
    UnlistedFileError,
    UnsafeArchiveError,
    UnsignedPackageError,
    VersionBelowFloorError,
)
from agent.device.packages.limits import PackageLimits
from agent.device.packages.staging import StagedPackage, remove_stale_staging, stage
from agent.device.platform.elf import host_arch
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.platform.selection import select_artifact
from agent.device.runtime.dlr.backend import DlrBackend
from agent.tools.boards import board_root
from agent.wire.errors import MissingSignatureError, SignatureError

X86_ONLY = pytest.mark.skipif(host_arch() != "x86_64",
                              reason="uses the x86_64 builds of emulated rasp4b artifacts")
SO = f"dlr/{HOST_ARTIFACT}/compiled.so"
PARAMS = f"dlr/{HOST_ARTIFACT}/compiled.params"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def good(built_models: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(built_models, "digits-v2", keys, tmp_path_factory.mktemp("good"), version=5)


@pytest.fixture(scope="module")
def host() -> DeviceProfile:
    return detect_profile()


@pytest.fixture(scope="module")
def rpi4() -> DeviceProfile:
    return detect_profile(root=board_root("rpi4_64"), emulate=True)


def _stage(package: Path, keys: Keys, profile: DeviceProfile, work: Path,
           **kwargs: Any) -> StagedPackage:
    options: dict[str, Any] = {"trust": keys.trust, "min_version": 3, "profile": profile,
                               "work_dir": work}
    options.update(kwargs)
    return stage(package, **options)


def test_stage_on_the_host(good: Path, keys: Keys, host: DeviceProfile, tmp_path: Path) -> None:
    import hashlib

    work = tmp_path / "work"
    staged = _stage(good, keys, host, work,
                    expected_sha256=hashlib.sha256(good.read_bytes()).hexdigest())
    assert staged.manifest.version == 5 and staged.manifest.label == "digits-v5"
    assert staged.dir.parent == work and staged.dir.name.startswith("digits-v5-")
    assert [p.name for p in work.iterdir()] == [staged.dir.name]  # no temp dir, no archive
    backend = DlrBackend(artifact_dir=staged.artifact_dir)
    assert backend.inputs[0].shape == (1, 64)
    backend.close()
    again = _stage(good, keys, host, work)  # the same archive staged twice replaces itself
    assert again.dir == staged.dir and [p.name for p in work.iterdir()] == [staged.dir.name]


@X86_ONLY
def test_emulated_rasp4b_takes_its_emulated_build_only(built_models: Path, keys: Keys,
                                                       rpi4: DeviceProfile,
                                                       tmp_path: Path) -> None:
    picked, _ = select_artifact(built_models / "digits-v2", rpi4)
    assert picked.name == "rasp4b-x86_64"
    package = build(built_models, "digits-v2", keys, tmp_path / "pkg", artifact=picked.name,
                    version=5)
    staged = _stage(package, keys, rpi4, tmp_path / "ok")
    assert (staged.manifest.target, staged.manifest.emulated) == ("rasp4b", True)

    work = tmp_path / "work"
    wrong_target = build(built_models, "digits-v2", keys, tmp_path / "pkg",
                         artifact="linux_x86_64-x86_64", version=5)
    with pytest.raises(TargetMismatchError, match=r"linux_x86_64.*rasp4b"):
        _stage(wrong_target, keys, rpi4, work)
    native = build(built_models, "digits-v2", keys, tmp_path / "pkg", artifact="rasp4b-aarch64",
                   version=5)
    with pytest.raises(ArchitectureMismatchError, match=r"built for aarch64.*machine is x86_64"):
        _stage(native, keys, rpi4, work)
    assert leftovers(work) == []


def _unsigned(doc: dict[str, Any]) -> None:
    del doc["key_id"], doc["signature"]


def _bump_version(doc: dict[str, Any]) -> None:
    doc["version"] = 99


def _bad_packages(built_models: Path, keys: Keys, good: Path,
                  out: Path) -> dict[str, tuple[Path, type[AgentError], str, dict[str, Any]]]:
    """name -> (package, error, message pattern, extra stage() options)."""
    aarch64_so = (built_models / "digits-v2" / "dlr" / "rasp4b-aarch64" / "compiled.so")
    params = dict(members(good))[PARAMS]
    tampered = bytearray(params)
    tampered[-1] ^= 0x01
    cases: dict[str, tuple[Path, type[AgentError], str, dict[str, Any]]] = {
        "unsigned": (repack(good, out / "unsigned.tgz", edit=_unsigned),
                     UnsignedPackageError, "not signed", {}),
        "untrusted key": (build(built_models, "digits-v2", keys, out / "stranger",
                                version=5, signer=keys.stranger),
                          UnknownPackageKeyError, "untrusted key 'other'", {}),
        "revoked key": (build(built_models, "digits-v2", keys, out / "retired",
                              version=5, signer=keys.retired),
                        RevokedPackageKeyError, "revoked key 'old'", {}),
        "edited after signing": (repack(good, out / "edited.tgz", edit=_bump_version),
                                 BadPackageSignatureError, "does not match", {}),
        "below the floor": (good, VersionBelowFloorError, "version 5 is below the floor 6",
                            {"min_version": 6}),
        "file digest": (repack(good, out / "file.tgz", replace={PARAMS: bytes(tampered)}),
                        DigestMismatchError, "compiled.params: sha256", {}),
        "archive digest": (good, DigestMismatchError, "archive sha256",
                           {"expected_sha256": "ab" * 32}),
        "unlisted file": (repack(good, out / "extra.tgz",
                                 extra=[file_member("dlr/evil.so", b"\x7fELF")]),
                          UnlistedFileError, "dlr/evil.so", {}),
        "missing file": (repack(good, out / "missing.tgz", drop=("model.json",)),
                         MissingFileError, "model.json", {}),
        "truncated": (_truncated(good, out / "truncated.tgz"), TruncatedArchiveError,
                      "truncated", {}),
        "not an archive": (_garbage(out / "garbage.tgz"), PackageFormatError, "tar.gz", {}),
        "path traversal": (repack(good, out / "traversal.tgz",
                                  extra=[file_member("../../escaped", b"x")]),
                           UnsafeArchiveError, "traversal", {}),
        "symlink": (repack(good, out / "symlink.tgz",
                           extra=[special_member("dlr/x.so", tarfile.SYMTYPE, "/bin/sh")]),
                    UnsafeArchiveError, "symlink", {}),
        "absolute path": (repack(good, out / "absolute.tgz",
                                 extra=[file_member("/tmp/escaped-stage", b"x")]),
                          UnsafeArchiveError, "absolute", {}),
        "oversized member": (good, UnsafeArchiveError, "oversized",
                             {"limits": PackageLimits(max_member_bytes=20_000)}),
        "wrong-architecture .so": (repack(good, out / "arm.tgz",
                                          replace={SO: aarch64_so.read_bytes()},
                                          resign=keys.signer),
                                   ArchitectureMismatchError, "built for aarch64", {}),
        "wrong target": (build(built_models, "digits-v2", keys, out / "rasp4b",
                               artifact="rasp4b-aarch64", version=5),
                         TargetMismatchError, "rasp4b", {}),
    }
    return cases


def _truncated(good: Path, dest: Path) -> Path:
    data = good.read_bytes()
    dest.write_bytes(data[: len(data) * 2 // 3])
    return dest


def _garbage(dest: Path) -> Path:
    dest.write_bytes(os.urandom(5000))
    return dest


CASES = ["unsigned", "untrusted key", "revoked key", "edited after signing", "below the floor",
         "file digest", "archive digest", "unlisted file", "missing file", "truncated",
         "not an archive", "path traversal", "symlink", "absolute path", "oversized member",
         "wrong-architecture .so", "wrong target"]


@pytest.fixture(scope="module")
def bad_packages(built_models: Path, keys: Keys, good: Path,
                 tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, tuple[Path, type[AgentError], str, dict[str, Any]]]:
    if host_arch() != "x86_64":
        pytest.skip("the wrong-arch cases use the aarch64 build")
    cases = _bad_packages(built_models, keys, good, tmp_path_factory.mktemp("bad"))
    assert sorted(cases) == sorted(CASES)
    return cases


@pytest.mark.parametrize("case", CASES)
def test_bad_package_is_refused_and_leaves_nothing(
        bad_packages: dict[str, tuple[Path, type[AgentError], str, dict[str, Any]]],
        keys: Keys, host: DeviceProfile, tmp_path: Path, case: str) -> None:
    package, error, pattern, options = bad_packages[case]
    work = tmp_path / "work"
    with pytest.raises(error, match=pattern):
        _stage(package, keys, host, work, **options)
    assert leftovers(work) == []
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-stage").exists()


def test_signature_errors_are_both_package_and_protocol_errors() -> None:
    assert issubclass(UnsignedPackageError, PackageError)
    assert issubclass(UnsignedPackageError, MissingSignatureError)
    assert issubclass(BadPackageSignatureError, SignatureError)


def test_full_disk_during_fetch_leaves_nothing(good: Path, keys: Keys, host: DeviceProfile,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC simulated at the download's one write call (see test_package_fetch for the
    real-kernel variant under RLIMIT_FSIZE)."""
    import errno

    from agent.device.packages import fetch as fetch_module
    from agent.device.packages.errors import DiskFullError

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fetch_module, "write_chunk", disk_full)
    work = tmp_path / "work"
    with pytest.raises(DiskFullError):
        _stage(good, keys, host, work)
    assert leftovers(work) == []


_CRASH_CHILD = """
import sys
from pathlib import Path
from agent.device.platform.profile import detect_profile
from agent.wire.signing import TrustStore
from agent.device.packages.staging import stage
stage(sys.argv[1], trust=TrustStore.from_text({"ctl-1": sys.argv[3]}), min_version=0,
      profile=detect_profile(), work_dir=Path(sys.argv[2]))
"""


@pytest.mark.parametrize("point", ["mid-download", "mid-extract"])
def test_a_killed_stage_is_cleaned_at_start_up(good: Path, keys: Keys, tmp_path: Path,
                                               point: str) -> None:
    work = tmp_path / "work"
    env = {**os.environ, "EDGE_AGENT_CRASH_AT": point}
    child = subprocess.run([sys.executable, "-c", _CRASH_CHILD, str(good), str(work),
                            keys.signer_public_b64], env=env, capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = leftovers(work)
    assert left and all(name.startswith(".stage-") for name in left)
    marker = ".partial" if point == "mid-download" else ".extract-"
    assert any(marker in name for name in left), left
    assert remove_stale_staging(work) and leftovers(work) == []
