"""A package as the store keeps it: the artifact a stored version serves, and the check that
its files still match the signed manifest (run by store recovery on start)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.device.packages.manifest import (
    package_artifact_dir,
    package_file,
    read_package_manifest,
)
from agent.device.store.errors import StoreError


def package_artifact(package_dir: Path) -> tuple[Path, str]:
    """The DLR artifact directory inside a stored package, and the package's label."""
    manifest = read_package_manifest(package_dir)
    return package_artifact_dir(package_dir, manifest), manifest.label


def verify_package_files(package_dir: Path) -> None:
    """Every file the signed manifest lists is present with its digest (store recovery)."""
    manifest = read_package_manifest(package_dir)
    for name, entry in manifest.files.items():
        digest = hashlib.sha256(package_file(package_dir, name).read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise StoreError(f"{name} no longer matches its signed digest")
