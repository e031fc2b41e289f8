"""Hostile package archives, each staged through the real staging with a really signed
manifest: refused by a typed error naming the limit, within a deadline and bounded
memory, with nothing left in the work folder; and, through a running agent, while blue
keeps serving.

Every attack keeps the signed ``manifest.json`` of a real package first, so the signature
verifies and the refusal comes in extraction, where it would on a device.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from archive_attacks import (
    GIB,
    MIB,
    Format,
    entry,
    hostile,
    nfd,
    package_entries,
    tar_bytes,
    tiny_members,
    zeros_bomb,
)
from cloud import CloudPublisher, CloudSubscriber, signed_command
from package_support import (
    HOST_ARTIFACT,
    Keys,
    build,
    leftovers,
    make_keys,
    package_label,
    repack,
)
from paths import REPO_ROOT

from agent.device.packages.errors import (
    ArchiveLimitError,
    PackageError,
    PackageFormatError,
    UnsafeArchiveError,
)
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import MANIFEST_NAME
from agent.device.packages.staging import stage
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.commands import StageCommand, StatusCommand

DEADLINE_S = 5.0  # each refusal; generous for a loaded 2-core CI box (they take < 0.3 s)
PEAK_RSS_BYTES = 200 * MIB  # the staging process, imports included (about 60 MiB)
PEAK_GROWTH_BYTES = 64 * MIB  # what refusing them all may add (about 2 MiB)
ART = f"dlr/{HOST_ARTIFACT}"
THING = "hostile-archives-1"
Build = Callable[[Path, Path], Path]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def good(built_models: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(built_models, "digits-v2", keys, tmp_path_factory.mktemp("good"), version=5)


@pytest.fixture(scope="module")
def host() -> DeviceProfile:
    return detect_profile()


def _with(*extra: tuple[tarfile.TarInfo, bytes], fmt: Format = tarfile.PAX_FORMAT) -> Build:
    return lambda good, dest: hostile(good, dest, list(extra), fmt=fmt)


def _manifest_renamed(good: Path, dest: Path) -> Path:
    own = package_entries(good)
    own[0][0].name = f"./{MANIFEST_NAME}"
    dest.write_bytes(gzip.compress(tar_bytes(own), mtime=0))
    return dest


def _second_manifest(good: Path, dest: Path) -> Path:
    doc = json.loads(package_entries(good)[0][1])
    doc["version"] = 99
    return hostile(good, dest, [entry(MANIFEST_NAME, json.dumps(doc).encode())])


def _many_members(good: Path, dest: Path) -> Path:
    stream = tar_bytes(package_entries(good), end=False) + tiny_members(100_000) + bytes(1024)
    dest.write_bytes(gzip.compress(stream, compresslevel=1, mtime=0))
    return dest


def _dirs(count: int, depth: int) -> Build:
    names = ["/".join([f"d{i}", *["x"] * (depth - 1)]) for i in range(count)]
    return _with(*(entry(name + "/", kind=tarfile.DIRTYPE) for name in names))


def _sparse_10(good: Path, dest: Path) -> Path:
    sparse_map = b"1\n0\n4\n".ljust(512, b"\0")
    return hostile(good, dest, [entry(f"{ART}/GNUSparseFile.0/s.bin", sparse_map + b"data",
                                      pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                           "GNU.sparse.name": f"{ART}/s.bin",
                                           "GNU.sparse.realsize": "4"})])


def _global_pax(good: Path, dest: Path) -> Path:
    header = tarfile.TarInfo.create_pax_global_header({"path": "model.json"})
    own = package_entries(good)
    stream = tar_bytes(own[:1], end=False) + header + tar_bytes(own[1:])
    dest.write_bytes(gzip.compress(stream, mtime=0))
    return dest


def _bomb_member(good: Path, dest: Path) -> Path:
    return zeros_bomb(good, dest, member_bytes=500 * MIB)


def _bomb_tail(good: Path, dest: Path) -> Path:
    return zeros_bomb(good, dest, tail_bytes=8 * GIB)


NO_RATIO = PackageLimits(max_ratio=10**9, max_total_bytes=128 * MIB)
# attack -> (build, error, message pattern, limit named or None, limits for stage())
ATTACKS: dict[str, tuple[Build, type[PackageError], str, str | None, PackageLimits | None]] = {
    "bomb: a 500 MiB member of zeros": (_bomb_member, ArchiveLimitError,
                                        "decompresses more than 200:1", "max_ratio", None),
    "bomb: 8 GiB of zeros after the tar": (_bomb_tail, ArchiveLimitError,
                                           "decompresses more than 200:1", "max_ratio", None),
    "bomb: 8 GiB of zeros, ratio not judged": (_bomb_tail, ArchiveLimitError,
                                               "unpacks to more than", "max_total_bytes",
                                               NO_RATIO),
    "hardlink": (_with(entry(f"{ART}/x.so", kind=tarfile.LNKTYPE, linkname="model.json")),
                 UnsafeArchiveError, "hardlink", None, None),
    "./manifest.json": (_with(entry(f"./{MANIFEST_NAME}", b"{}")), UnsafeArchiveError,
                        "'.' component", None, None),
    "manifest.json/ (a directory)": (_with(entry(f"{MANIFEST_NAME}/", kind=tarfile.DIRTYPE)),
                                     UnsafeArchiveError, "duplicate name", None, None),
    "manifest.json/ (a file)": (_with(entry(f"{MANIFEST_NAME}/", b"{}"),
                                      fmt=tarfile.USTAR_FORMAT),
                                UnsafeArchiveError, "empty or '.' component", None, None),
    "manifest.json twice": (_second_manifest, UnsafeArchiveError, "duplicate name", None,
                            None),
    "MANIFEST.JSON": (_with(entry(MANIFEST_NAME.upper(), b"{}")), UnsafeArchiveError,
                      "differ only by case", None, None),
    "the signed manifest as ./manifest.json": (_manifest_renamed, PackageFormatError,
                                               "first member is './manifest.json'", None,
                                               None),
    "pax size=10**15": (_with(entry(f"{ART}/huge.bin", pax={"size": str(10**15)})),
                        ArchiveLimitError, "oversized", "max_member_bytes", None),
    "base-256 size 10**15": (_with(entry(f"{ART}/huge.bin", size=10**15),
                                   fmt=tarfile.GNU_FORMAT),
                             ArchiveLimitError, "oversized", "max_member_bytes", None),
    "pax size=-1000": (_with(entry(f"{ART}/neg.bin", pax={"size": "-1000"})),
                       UnsafeArchiveError, "negative size", None, None),
    "a 2 MB pax header": (_with(entry(f"{ART}/x.bin", pax={"comment": "x" * 2_000_000})),
                          ArchiveLimitError, "extended header", "max_header_bytes", None),
    "a 100 KB GNU long name": (_with(entry("d/" * 50_000 + "x", b""), fmt=tarfile.GNU_FORMAT),
                               ArchiveLimitError, "extended header", "max_header_bytes", None),
    "a global pax header": (_global_pax, UnsafeArchiveError, "global pax header", None, None),
    "sparse: GNU 'S' member": (_with(entry(f"{ART}/s.bin", kind=tarfile.GNUTYPE_SPARSE),
                                     fmt=tarfile.GNU_FORMAT),
                               UnsafeArchiveError, "sparse file", None, None),
    "sparse: pax GNU.sparse 1.0": (_sparse_10, UnsafeArchiveError, "sparse file", None, None),
    "sparse: pax GNU.sparse.map": (_with(entry(f"{ART}/s.bin", b"data",
                                               pax={"GNU.sparse.map": "0,4",
                                                    "GNU.sparse.size": "4"})),
                                   UnsafeArchiveError, "sparse file", None, None),
    "100,000 tiny members": (_many_members, ArchiveLimitError, "more than 256 members",
                             "max_members", None),
    "240 unlisted directories 900 deep": (_dirs(240, 900), ArchiveLimitError,
                                          "1800-byte name", "max_name_bytes", None),
    "40 levels deep": (_with(entry("a/" * 39 + "x.bin", b"x")), ArchiveLimitError,
                       "40 levels deep", "max_depth", None),
    "240 unlisted directories": (_dirs(240, 30), UnsafeArchiveError, "holds no file", None,
                                 None),
    "a long path component": (_with(entry(f"{ART}/{'c' * 40}.bin", b"x")), ArchiveLimitError,
                              "44-byte path component", "max_component_bytes",
                              PackageLimits(max_component_bytes=32)),
    "names differing by case": (_with(entry("Model.json", b"{}")), UnsafeArchiveError,
                                "differ only by case", None, None),
    "names differing by NFC/NFD": (_with(entry("dlr/caf\u00e9.txt", b"1"),
                                         entry(nfd("dlr/caf\u00e9.txt"), b"2")),
                                   UnsafeArchiveError, "Unicode normalisation", None, None),
}
HEAVY = ["bomb: a 500 MiB member of zeros", "bomb: 8 GiB of zeros after the tar",
         "100,000 tiny members", "240 unlisted directories 900 deep", "a 2 MB pax header",
         "pax size=10**15"]


@pytest.fixture(scope="module")
def attacks(good: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("attacks")
    built: dict[str, Path] = {}
    for index, (name, (make, *_)) in enumerate(ATTACKS.items()):
        built[name] = make(good, out / f"attack-{index}.tar.gz")
    return built


def _stage(package: Path, keys: Keys, host: DeviceProfile, work: Path,
           limits: PackageLimits | None = None) -> Any:
    return stage(package, trust=keys.trust, min_version=0, profile=host, work_dir=work,
                 limits=limits)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_hostile_archive_is_refused_fast_and_leaves_nothing(
        attacks: dict[str, Path], keys: Keys, host: DeviceProfile, tmp_path: Path,
        attack: str) -> None:
    _, error, pattern, limit, limits = ATTACKS[attack]
    work = tmp_path / "work"
    start = time.monotonic()
    with pytest.raises(error, match=pattern) as refused:
        _stage(attacks[attack], keys, host, work, limits)
    elapsed = time.monotonic() - start
    assert elapsed < DEADLINE_S, f"{attack}: refused after {elapsed:.1f} s"
    if limit is not None:
        assert isinstance(refused.value, ArchiveLimitError)
        assert refused.value.limit == limit and f"(limit {limit}=" in str(refused.value)
    assert leftovers(work) == []


@pytest.mark.parametrize("name", ["dlr/evil\nINFO staged digits-v9 ok.so", "dlr/a\rb.so",
                                  "dlr/\x1b[31mred.so", "dlr/line\u2028sep.so", "dlr/del\x7f",
                                  "dlr/bidi\u202egnp.so", "dlr/not-utf8-\udcff.so"])
def test_a_control_character_in_a_name_is_refused_and_never_echoed(
        good: Path, keys: Keys, host: DeviceProfile, tmp_path: Path, name: str) -> None:
    package = hostile(good, tmp_path / "ctl.tar.gz", [entry(name, b"x")])
    work = tmp_path / "work"
    with pytest.raises(UnsafeArchiveError, match="control, invisible or non-UTF-8") as refused:
        _stage(package, keys, host, work)
    message = str(refused.value)
    assert message.isprintable(), repr(message)
    assert not any(c in message for c in "\n\r\x1b\x7f\u2028\u202e\udcff"), repr(message)
    assert repr(name[4:10])[1:-1] in message  # shown escaped, so an operator can find it
    assert leftovers(work) == []


def test_a_small_package_that_compresses_well_is_staged(
        good: Path, keys: Keys, host: DeviceProfile, tmp_path: Path) -> None:
    """16 MiB of zeros (about 1000:1) in a signed package: under the ratio floor, judged
    never, so staged."""
    zeros = bytes(16 * MIB)

    def add(doc: dict[str, Any]) -> None:
        doc["files"][f"{ART}/zeros.bin"] = {"sha256": hashlib.sha256(zeros).hexdigest(),
                                            "size": len(zeros)}

    package = repack(good, tmp_path / "zeros.tar.gz", edit=add,
                     extra=[entry(f"{ART}/zeros.bin", zeros)], resign=keys.signer)
    assert package.stat().st_size - good.stat().st_size < 50_000
    staged = _stage(package, keys, host, tmp_path / "work")
    assert (staged.dir / ART / "zeros.bin").stat().st_size == len(zeros)


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from agent.device.packages.staging import stage
from agent.device.platform.profile import detect_profile
from agent.wire.signing import TrustStore
trust, profile = TrustStore.from_text({"ctl-1": sys.argv[1]}), detect_profile()
def peak():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"attack": None, "peak": peak()}), flush=True)
for path in sys.argv[3:]:
    start = time.monotonic()
    try:
        stage(path, trust=trust, min_version=0, profile=profile, work_dir=Path(sys.argv[2]))
        error = None
    except Exception as err:
        error = type(err).__name__
    print(json.dumps({"attack": path, "error": error, "s": time.monotonic() - start,
                      "peak": peak()}), flush=True)
"""


def test_the_heavy_attacks_stay_within_bounded_memory(attacks: dict[str, Path], keys: Keys,
                                                      tmp_path: Path) -> None:
    """Peak RSS of a staging process refusing the bombs, the 100,000 members, the deep
    directories and the huge headers, one after the other (before these limits, the deep
    directories alone took the process past 440 MB, still rising after a minute)."""
    work = tmp_path / "work"
    child = subprocess.run([sys.executable, "-c", _CHILD, keys.signer_public_b64, str(work),
                            *(str(attacks[name]) for name in HEAVY)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert child.returncode == 0, child.stderr
    rows = [json.loads(line) for line in child.stdout.splitlines()]
    baseline, results = rows[0], rows[1:]
    assert len(results) == len(HEAVY)
    for name, row in zip(HEAVY, results, strict=True):
        assert row["error"] == ATTACKS[name][1].__name__, (name, row)
        assert row["s"] < DEADLINE_S, (name, row)
    peak = results[-1]["peak"]
    shown = f"peak RSS {peak / MIB:.0f} MiB (after imports {baseline['peak'] / MIB:.0f} MiB)"
    assert peak < PEAK_RSS_BYTES, shown
    assert peak - baseline["peak"] < PEAK_GROWTH_BYTES, shown
    assert leftovers(work) == []


# ---- through a running agent ------------------------------------------------------------

@pytest.fixture
def agent(shared_broker: MosquittoBroker, built_models: Path, keys: Keys,
          attacks: dict[str, Path], tmp_path: Path
          ) -> Iterator[tuple[AgentProcess, CloudSubscriber, CloudPublisher]]:
    config = tmp_path / "agent.yaml"  # stage commands may read the attacks' folder
    config.write_text(f"packageDirs:\n  - {next(iter(attacks.values())).parent}\n")
    cloud = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                            topic=f"edge/{THING}/#").start()
    process = AgentProcess(thing=THING, model=built_models / "digits-v1",
                           state_dir=tmp_path / "state", broker_port=shared_broker.port,
                           log_path=tmp_path / "agent.log", rate=400,
                           extra=["--trusted-key", f"ctl-1={keys.signer_public_b64}",
                                  "--config", str(config)])
    process.start()
    publisher = CloudPublisher("127.0.0.1", shared_broker.port)
    try:
        cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "agent up")
        yield process, cloud, publisher
    finally:
        publisher.close()
        assert process.stop() == 0, process.log()
        cloud.stop()


def _blue_totals(cloud: CloudSubscriber) -> list[int]:
    return [m.variants["blue"].inferences_total for m in cloud.of_type("metrics")
            if "blue" in m.variants]


def _send(cloud: CloudSubscriber, publisher: CloudPublisher, keys: Keys, command: Any,
          seq: int, reply: str, **args: Any) -> Any:
    """Send a signed command to the agent; its first ``reply`` (ack or state) message."""
    payload = signed_command(keys.signer, command, thing=THING, rollout_id="r-hostile",
                             rollout_seq=seq, **args)
    command_id = json.loads(payload)["command_id"]
    publisher.publish(f"edge/{THING}/commands", payload)

    def answer(messages: list[Any]) -> Any:
        return next((m for m in messages if m.type == reply
                     and getattr(m, "command_id" if reply == "ack" else "in_reply_to", None)
                     == command_id), None)

    cloud.wait_for(lambda ms: answer(ms) is not None, 30, f"{reply} to {command.__name__}")
    return answer(cloud.messages)


def _wait_for_metrics(cloud: CloudSubscriber, count: int) -> None:
    cloud.wait_for(lambda ms: sum(m.type == "metrics" for m in ms) >= count, 30,
                   f"{count} metrics reports")


def test_blue_keeps_serving_while_a_running_agent_refuses_a_bomb_and_a_deep_package(
        agent: tuple[AgentProcess, CloudSubscriber, CloudPublisher], attacks: dict[str, Path],
        keys: Keys, tmp_path: Path) -> None:
    process, cloud, publisher = agent
    cases = [("bomb: 8 GiB of zeros after the tar", "max_ratio=200"),
             ("240 unlisted directories 900 deep", "max_name_bytes=255")]
    for seq, (attack, limit) in enumerate(cases, start=1):
        package = attacks[attack]
        before, metrics_seen = _blue_totals(cloud)[-1], len(cloud.of_type("metrics"))
        sent = time.monotonic()
        ack = _send(cloud, publisher, keys, StageCommand, seq, "ack", url=package.as_uri(),
                    sha256=hashlib.sha256(package.read_bytes()).hexdigest(),
                    version=package_label(package))
        answered = time.monotonic() - sent
        assert ack.outcome == "failed", ack
        assert "ArchiveLimitError" in ack.reason and limit in ack.reason, ack.reason
        assert answered < 10, f"{attack}: answered after {answered:.1f} s"
        _wait_for_metrics(cloud, metrics_seen + 3)
        totals = _blue_totals(cloud)
        assert totals == sorted(totals) and totals[-1] > before, "blue kept counting"
    state = _send(cloud, publisher, keys, StatusCommand, len(cases) + 1, "state")
    assert state.models == {"blue": "digits-v1"}
    assert leftovers(tmp_path / "state" / "staging") == []
    errors = sum(m.variants[v].errors for m in cloud.of_type("metrics") for v in m.variants)
    assert errors == 0 and process.process is not None and process.process.poll() is None
