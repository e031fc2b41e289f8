"""The device's first blue model: a signed package installed into an empty store.

Under Greengrass the package comes from a model component (one signed package
per Neo target and architecture in its artifacts folder, and maybe an ONNX
package); elsewhere it is a file or folder named by ``initialPackage``. A device
whose agent runs the ONNX backend takes the folder's ONNX package when it has
one, and otherwise the DLR package of its Neo target, like every other device.
The package goes through exactly the staging every swap goes through (signature,
floor, digests, safe extraction, target and ELF checks, golden vectors in a child)
and is then made current at once: there is no previous model to fall back on, so
no trial.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import ArtifactMissingError, TargetMismatchError
from agent.device.packages.archive import read_manifest_member
from agent.device.packages.errors import PackageError
from agent.device.packages.limits import PackageLimits
from agent.device.packages.staging import stage
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.selection import acceptable_targets
from agent.device.runtime import BackendConfig
from agent.device.store.records import version_id_of
from agent.device.store.store import ModelStore
from agent.wire.signing import TrustStore

log = logging.getLogger("edge_agent.first_model")
PACKAGE_SUFFIX = ".tar.gz"


@dataclass(frozen=True)
class Candidate:
    path: Path
    target: str
    arch: str
    version: int
    backend: str = "dlr"


def _candidate(path: Path, limits: PackageLimits) -> Candidate | None:
    """What the package says it is (unverified: only to choose; staging verifies)."""
    try:
        manifest = json.loads(read_manifest_member(path, max_bytes=limits.max_manifest_bytes))
        return Candidate(path=path, target=str(manifest["target"]), arch=str(manifest["arch"]),
                         version=int(manifest["version"]),
                         backend=str(manifest.get("backend", "dlr")))
    except (PackageError, ValueError, KeyError, TypeError) as err:
        log.warning("%s is not a readable model package: %s", path.name, err)
        return None


def choose_package(location: Path, profile: DeviceProfile,
                   limits: PackageLimits | None = None, *, backend: str = "dlr") -> Path:
    """The package in ``location`` (a file, or a folder of packages) for this device:
    on a device running the ``onnx`` backend its ONNX package if there is one, else its Neo
    target (or the generic one for its architecture) on its real architecture; the highest
    version first."""
    limits = limits or PackageLimits()
    if location.is_file():
        return location
    if not location.is_dir():
        raise ArtifactMissingError(f"initial model package {location}: no such file or folder")
    found = [c for p in sorted(location.glob(f"*{PACKAGE_SUFFIX}"))
             if (c := _candidate(p, limits)) is not None]
    if not found:
        raise ArtifactMissingError(f"{location}: no model packages (*{PACKAGE_SUFFIX})")
    onnx = [c for c in found if c.backend == "onnx"]
    if backend == "onnx" and onnx:
        return max(onnx, key=lambda c: c.version).path
    for target in acceptable_targets(profile):
        fits = [c for c in found if c.target == target and c.arch == profile.arch]
        if fits:
            return max(fits, key=lambda c: c.version).path
    available = ", ".join(f"{c.path.name} ({c.target}/{c.arch})" for c in found)
    raise TargetMismatchError(
        f"no package in {location} fits this device ({profile.neo_target} on {profile.arch}); "
        f"available: {available}")


def offered_version(location: Path, profile: DeviceProfile, *,
                    backend: str = "dlr") -> int | None:
    """The version of the package ``location`` offers this device (unverified: for a
    report only), or None when it offers none."""
    try:
        candidate = _candidate(choose_package(location, profile, backend=backend),
                               PackageLimits())
    except (ArtifactMissingError, TargetMismatchError):
        return None
    return candidate.version if candidate else None


def install_first_model(location: Path, *, store: ModelStore, trust: TrustStore,
                        profile: DeviceProfile, work_dir: Path, min_version: int,
                        golden_timeout_s: float,
                        backend_config: BackendConfig | None = None,
                        limits: PackageLimits | None = None) -> str:
    """Stage the device's package from ``location`` and make it current; its store id.
    ``backend_config`` is the device's runtime settings (default: DLR's defaults);
    ``limits`` the device's package limits (default: their defaults)."""
    backend = backend_config.type if backend_config is not None else "dlr"
    package = choose_package(location, profile, limits, backend=backend)
    staged = stage(package, trust=trust, min_version=min_version, profile=profile,
                   work_dir=work_dir, limits=limits, golden_timeout_s=golden_timeout_s,
                   backend_config=backend_config)
    manifest = staged.manifest
    version_id = version_id_of(manifest.version, staged.archive_sha256)
    try:
        if version_id not in store.versions():
            store.add(staged.dir, version_id=version_id,
                      manifest=manifest.model_dump(mode="json"))
    finally:
        # The store moves what it adds; what is left (the same version was stored already,
        # or adding failed) would otherwise stay in the staging folder for good.
        shutil.rmtree(staged.dir, ignore_errors=True)
    store.promote(version_id, trial_s=1.0)
    store.confirm_trial()
    log.info("installed the first model %s from %s", manifest.describe(), package.name)
    return version_id
