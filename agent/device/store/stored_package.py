"""A package as the store keeps it: what a stored version serves (the artifact, its label and
the runtime that loads it), and the check that its files still match the signed manifest
(run by store recovery on start)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.device.packages.backends import package_backend_config
from agent.device.packages.manifest import Backend as PackageBackend
from agent.device.packages.manifest import (
    package_artifact_dir,
    package_file,
    read_package_manifest,
)
from agent.device.runtime import BackendConfig, load_backend
from agent.device.runtime.base import Backend
from agent.device.store.errors import StoreError


@dataclass(frozen=True, kw_only=True)
class PackageArtifact:
    """What a stored package serves: ``path`` (a Neo artifact directory, or an ONNX
    package's model file), its ``label``, and the runtime (``backend``) that loads it."""

    path: Path
    label: str
    backend: PackageBackend

    def config(self, configured: BackendConfig | None) -> BackendConfig:
        """The settings it loads with on a device configured with ``configured``."""
        return package_backend_config(self.backend, configured)

    def load(self, configured: BackendConfig | None) -> Backend:
        """The loaded backend, with :meth:`config`'s settings."""
        return load_backend(self.path, self.config(configured))


def package_artifact(package_dir: Path) -> PackageArtifact:
    """What the stored package in ``package_dir`` serves, and with which runtime."""
    manifest = read_package_manifest(package_dir)
    return PackageArtifact(path=package_artifact_dir(package_dir, manifest),
                           label=manifest.label, backend=manifest.backend)


def verify_package_files(package_dir: Path) -> None:
    """Every file the signed manifest lists is present with its digest (store recovery)."""
    manifest = read_package_manifest(package_dir)
    for name, entry in manifest.files.items():
        digest = hashlib.sha256(package_file(package_dir, name).read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise StoreError(f"{name} no longer matches its signed digest")
