"""Installing a component's artifacts from a component store, as a nucleus does.

Each artifact of the manifest is found by the last segment of its ``URI`` in the store's
``artifacts/<Name>/<Version>/`` (so ``s3://...`` placeholders and ``file://`` URIs both
work; a ``file://`` URI whose file is not there is read from its own path), copied into
``<root>/packages/artifacts/<Name>/<Version>/``, and then:

* ``Digest``: checked when the recipe has one. As the Greengrass nucleus computes it,
  it is the **base64** (standard alphabet, padded) encoding of the file's hash under
  ``Algorithm`` (a Java MessageDigest name; ``SHA-256`` when absent). Local recipes
  without a digest are taken as they are, as a real nucleus does.
* ``Permission``: ``Read`` (default OWNER) and ``Execute`` (default NONE), each NONE,
  OWNER or ALL, become the file's mode; nothing is writable, as on a device.
* ``Unarchive: ZIP``: unpacked into
  ``<root>/packages/artifacts-unarchived/<Name>/<Version>/<zip name without extension>/``
  with the same permissions on its files; a member that would land outside is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

from agent.tools.greengrass.recipe import Artifact, Permission
from agent.tools.greengrass.recipe_check import artifact_digest
from agent.tools.nucleus.components import ComponentArtifactError, ComponentStore

_HASHES = {"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512", "SHA-1": "sha1",
           "MD5": "md5"}
_READ = {"NONE": 0, "OWNER": stat.S_IRUSR, "ALL": stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH}
_EXECUTE = {"NONE": 0, "OWNER": stat.S_IXUSR | stat.S_IRUSR,
            "ALL": (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                    | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)}


def artifacts_path(root: Path, name: str, version: str) -> Path:
    return root / "packages" / "artifacts" / name / version


def decompressed_path(root: Path, name: str, version: str) -> Path:
    return root / "packages" / "artifacts-unarchived" / name / version


def artifact_file_name(uri: str) -> str:
    """The file name an artifact URI gives: its last ``/`` (or ``:``) segment."""
    return re.split(r"[/:]", uri.rstrip("/"))[-1]


def file_mode(permission: Permission) -> int:
    """The mode of an installed artifact file: its Read and Execute permission."""
    return _READ[permission.read] | _EXECUTE[permission.execute]


def install_artifacts(store: ComponentStore | None, *, name: str, version: str,
                      artifacts: Sequence[Artifact], root: Path) -> list[Path]:
    """Copy, check and unpack the ``artifacts`` of ``name`` ``version`` under ``root``;
    returns the installed files."""
    target = artifacts_path(root, name, version)
    target.mkdir(parents=True, exist_ok=True)
    installed: list[Path] = []
    seen: set[str] = set()
    for artifact in artifacts:
        file_name = artifact_file_name(artifact.uri)
        if not file_name or file_name in (".", ".."):
            raise ComponentArtifactError(
                f"{name}: artifact URI {artifact.uri!r} names no file", component=name)
        if file_name in seen:
            raise ComponentArtifactError(f"{name}: two artifacts are named {file_name}",
                                         component=name)
        seen.add(file_name)
        source = _find(store, name, version, artifact.uri, file_name)
        destination = target / file_name
        if destination.exists():
            destination.unlink()  # read-only from an earlier deployment
        shutil.copyfile(source, destination)
        _check_digest(artifact, destination, name)
        mode = file_mode(artifact.permission)
        os.chmod(destination, mode)
        if artifact.unarchive == "ZIP":
            _unzip(destination, decompressed_path(root, name, version) / Path(file_name).stem,
                   mode, name)
        installed.append(destination)
    return installed


def _find(store: ComponentStore | None, name: str, version: str, uri: str,
          file_name: str) -> Path:
    folder = store.artifact_dir(name, version) if store else None
    if folder is not None and (folder / file_name).is_file():
        return folder / file_name
    if uri.startswith("file://") and Path(uri[len("file://"):]).is_file():
        return Path(uri[len("file://"):])
    where = folder if folder is not None else "(no component store)"
    raise ComponentArtifactError(
        f"{name} {version}: artifact {file_name} ({uri}) is not in {where}", component=name)


def _check_digest(artifact: Artifact, path: Path, component: str) -> None:
    if artifact.digest is None:
        return
    algorithm = artifact.algorithm or "SHA-256"
    if algorithm.upper() not in _HASHES:
        raise ComponentArtifactError(
            f"{component}: {path.name}: unknown digest Algorithm {algorithm!r}",
            component=component)
    actual = artifact_digest(path, _HASHES[algorithm.upper()])
    if actual != artifact.digest:
        path.unlink()
        raise ComponentArtifactError(
            f"{component}: {path.name} does not match its {algorithm} Digest "
            f"(recipe {artifact.digest}, file {actual})", component=component)


def _unzip(archive: Path, folder: Path, mode: int, component: str) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base = folder.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                destination = (folder / member.filename).resolve()
                if (Path(member.filename).is_absolute()
                        or not destination.is_relative_to(base)
                        or stat.S_ISLNK(member.external_attr >> 16)):
                    raise ComponentArtifactError(
                        f"{component}: {archive.name}: member {member.filename!r} is a link "
                        f"or would land outside {folder}", component=component)
                zipped.extract(member, folder)
                os.chmod(destination, 0o755 if member.is_dir() else mode)
    except (zipfile.BadZipFile, OSError) as err:
        raise ComponentArtifactError(f"{component}: cannot unpack {archive.name}: {err}",
                                     component=component) from err
    for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        os.chmod(directory, 0o755)
