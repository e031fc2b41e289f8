"""Where the agent runs and what it serves when it starts: the device profile, the model
store (recovered, and given its first model when empty) and the blue model loaded from it.

The device root is a path: the real ``/``, or a tree of files to read the profile and
health from instead (``deviceRoot``). Emulating a bundled board is the command line's
business (``serve --board`` resolves the board to its tree and hands over that path).
"""

from __future__ import annotations

from pathlib import Path

from agent.core.errors import AgentError, ConfigError
from agent.core.model_layout import MODEL_INFO, TESTSET, model_label, read_model_info
from agent.core.model_metadata import ModelMetadata
from agent.device.app.config import AgentConfig
from agent.device.app.first_model import install_first_model, offered_version
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import load_backend
from agent.device.runtime.base import Backend
from agent.device.store.recovery import RecoveryReport
from agent.device.store.store import ModelStore
from agent.device.store.stored_package import package_artifact, verify_package_files
from agent.device.uplink.outbox import Outbox
from agent.wire.signing import TrustStore


def model_version(model_dir: Path) -> str:
    if (model_dir / MODEL_INFO).is_file():
        return model_label(read_model_info(model_dir))
    return model_dir.name


def _testset(config: AgentConfig) -> Path | None:
    """Replay data for the ``digits`` source: beside the model, or beside its packages."""
    for folder in (config.model_dir, config.initial_package):
        if folder is not None and (folder / TESTSET).is_file():
            return folder / TESTSET
    return None


def device_root(config: AgentConfig) -> Path:
    """The tree the profile and health are read from (``/`` on a real device)."""
    if config.board is not None:
        raise ConfigError(f"board {config.board!r} is not resolved to a device root: the "
                          "command line resolves a bundled board (serve --board); give "
                          "the agent deviceRoot instead")
    return config.device_root or Path("/")


def device_profile(config: AgentConfig) -> DeviceProfile:
    """This device, or the device whose tree ``deviceRoot`` names (emulated)."""
    root = device_root(config)
    if config.device_root is None:
        return detect_profile()
    return detect_profile(root=root, emulate=True)


def open_store(config: AgentConfig, trust: TrustStore,
               profile: DeviceProfile) -> tuple[ModelStore, RecoveryReport]:
    """The model store, recovered from any interrupted change, and holding the first
    model (``initialPackage``) if it was empty."""
    store = ModelStore(config.state_dir / "models", keep=config.keep_versions)
    recovery = store.recover(verify=verify_package_files)
    if store.current() is None and config.initial_package is not None:
        install_first_model(config.initial_package, store=store, trust=trust,
                            profile=profile, work_dir=config.state_dir / "staging",
                            min_version=config.min_model_version,
                            golden_timeout_s=config.golden_timeout_seconds,
                            backend_config=config.backend, limits=config.package_limits)
    return store, recovery


def initial_model(config: AgentConfig, store: ModelStore,
                  profile: DeviceProfile) -> tuple[Backend, str, Path | None]:
    """The store's current version if there is one (loaded with the runtime its package
    names, with the configured settings when they are that runtime's), else the configured
    model: its backend, its label and its replay data."""
    current = store.current()
    if current is not None:
        artifact = package_artifact(store.path(current))
        return artifact.load(config.backend), artifact.label, _testset(config)
    if config.model_dir is None:
        raise ConfigError("no model to serve: the store is empty and neither "
                          "initialPackage nor modelDir is set")
    resolved = resolve_model(config.model_dir, backend=config.backend.type, profile=profile)
    return (load_backend(resolved.load_dir, config.backend),
            model_version(resolved.model_dir or config.model_dir), resolved.testset)


def model_description(config: AgentConfig,
                      store: ModelStore) -> tuple[str, ModelMetadata | None]:
    """The served model's name and description: from the signed manifest of the store's
    current version, else from the configured model directory's ``model.json``."""
    current = store.current()
    if current is not None:
        manifest = store.manifest(current)
        raw = manifest.get("metadata")
        metadata = ModelMetadata.model_validate(raw) if isinstance(raw, dict) else None
        return str(manifest.get("name") or current), metadata
    if config.model_dir is not None and (config.model_dir / MODEL_INFO).is_file():
        try:
            info = read_model_info(config.model_dir)
        except AgentError:
            return config.model_dir.name, None
        return info.name, info.metadata
    return (config.model_dir.name if config.model_dir is not None else "model"), None


def report_start(outbox: Outbox, *, config: AgentConfig, store: ModelStore,
                 profile: DeviceProfile, recovery: RecoveryReport, serving: str) -> None:
    """Events about how the agent started: a model component's package it does not serve
    (a model component only installs the first model), and a rollback on recovery."""
    current = store.current()
    if config.initial_package is not None and current is not None:
        offered = offered_version(config.initial_package, profile,
                                  backend=config.backend.type)
        version = store.manifest(current).get("version")
        if offered is not None and offered != version:
            outbox.event(
                "model_component_unused",
                f"the model component offers version {offered}; {serving} "
                f"(version {version}) keeps serving: model changes go through rollouts",
                data={"offered": offered, "serving": str(version)})
    if recovery.reason:
        outbox.event("local_rollback", f"on start: {recovery.reason}"[:512],
                     data={"version": recovery.rolled_back_from or "",
                           "current": recovery.current or ""})
