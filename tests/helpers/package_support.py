"""Helpers shared by the package and staging tests (no tests here).

Keys, package builds, and tarfile surgery to craft bad packages: edit the
manifest (re-signing or not), change, add or drop members, truncate.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.packages.manifest import MANIFEST_NAME, sha256_hex
from agent.device.platform.boards import generic_target
from agent.device.platform.elf import host_arch
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer, TrustStore

HOST_TARGET = generic_target(host_arch())
HOST_ARTIFACT = f"{HOST_TARGET}-{host_arch()}"


@dataclass(frozen=True)
class Keys:
    signer: Signer  # trusted
    stranger: Signer  # a valid key the device does not know
    retired: Signer  # known to the device, but revoked
    trust: TrustStore
    signer_public_b64: str


def make_keys(directory: Path) -> Keys:
    files = {key_id: keys_generate(directory, key_id) for key_id in ("ctl-1", "other", "old")}
    signers = {key_id: Signer.from_file(f.private, key_id=key_id) for key_id, f in files.items()}
    trust = TrustStore.from_files({"ctl-1": files["ctl-1"].public, "old": files["old"].public},
                                  revoked=["old"])
    return Keys(signer=signers["ctl-1"], stranger=signers["other"], retired=signers["old"],
                trust=trust, signer_public_b64=files["ctl-1"].public_b64)


def build(models: Path, name: str, keys: Keys, out: Path, *, artifact: str = HOST_ARTIFACT,
          version: int | None = None, reference: str | None = None,
          signer: Signer | None = None) -> Path:
    """The signed package of ``artifact`` of model ``name``, by default of its own version."""
    return build_package(models / name, artifact, signer=signer or keys.signer, out_dir=out,
                         version=version,
                         reference=models / reference if reference else None)


def members(archive: Path) -> list[tuple[str, bytes]]:
    """(name, data) of every member, in archive order."""
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            out.append((member.name, handle.read() if handle else b""))
    return out


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def pack(dest: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """Write ``entries`` as a tar.gz, exactly as given (no checks)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    dest.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return dest


def repack(src: Path, dest: Path, *,
           edit: Callable[[dict[str, Any]], None] | None = None,
           replace: dict[str, bytes] | None = None,
           drop: tuple[str, ...] = (),
           extra: list[tuple[tarfile.TarInfo, bytes]] | None = None,
           resign: Signer | None = None) -> Path:
    """A copy of package ``src`` with its manifest edited and members changed.

    With ``resign`` the manifest's file entries are updated for ``replace`` and
    it is signed again (a package a trusted signer really made, e.g. with an
    ARM .so under an x86 name); without, the old signature stays.
    """
    replace = replace or {}
    items = members(src)
    manifest = json.loads(dict(items)[MANIFEST_NAME])
    if resign is not None:
        for name, data in replace.items():
            manifest["files"][name] = {"sha256": sha256_hex(data), "size": len(data)}
    if edit is not None:
        edit(manifest)
    if resign is not None:
        manifest = resign.seal(manifest)
    entries = [file_member(MANIFEST_NAME, json.dumps(manifest).encode())]
    entries += [file_member(name, replace.get(name, data))
                for name, data in items if name != MANIFEST_NAME and name not in drop]
    return pack(dest, entries + (extra or []))


def leftovers(directory: Path) -> list[str]:
    """Everything under ``directory``, relative, so a test can assert it is empty."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def package_label(package: Path) -> str:
    """The label a package's manifest gives it (what the device reports it serves as)."""
    label: str = json.loads(dict(members(package))[MANIFEST_NAME])["label"]
    return label
