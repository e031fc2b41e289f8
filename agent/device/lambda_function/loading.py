"""The Lambda handler's settings (environment variables) and loading the model they name.

Exactly one model source is set:

``EDGE_MODEL_STORE``
    The agent's state directory (its store is ``<stateDir>/models``) or the store
    folder itself. The version the agent made ``current`` is served: the same
    verified package, read in place without taking the store's lock (the agent
    owns it). Each file is checked against the digests in the package's signed
    manifest before loading, as the agent's own recovery does; with
    ``EDGE_TRUSTED_KEYS`` set the manifest's signature is verified too. When the
    agent moves ``current`` (a promotion, a rollback), the next invocation loads
    the new version.
``EDGE_INITIAL_PACKAGE``
    A signed model package (``.tar.gz``), or a folder of them from which the one
    for this device's Neo target and architecture is chosen, installed through
    exactly the agent's staging (signature against ``EDGE_TRUSTED_KEYS``, version
    floor, digests, safe extraction, target and ELF checks, golden vectors in a
    child process) into a store of the Lambda's own under ``EDGE_STATE_DIR``. A
    package already current there is not staged again; a different one replaces it.
``EDGE_MODEL_DIR``
    Development only, refused unless ``EDGE_ALLOW_UNSIGNED=1``: an unsigned model
    directory or Neo artifact directory, resolved for this device like
    ``edge-agent run --model``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import AgentError, ArtifactMissingError, ConfigError
from agent.core.model_layout import model_label, read_model_info
from agent.device.app.first_model import choose_package, install_first_model
from agent.device.packages.archive import read_manifest_member
from agent.device.packages.errors import PackageFormatError
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import read_manifest_doc, verify_manifest
from agent.device.packages.staging import remove_stale_staging
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import BackendConfig, DlrConfig, OnnxConfig, load_backend
from agent.device.runtime.base import Backend
from agent.device.store.records import version_id_of
from agent.device.store.store import (
    PACKAGE,
    VERIFIED,
    ModelStore,
    StoreCorruptError,
    StoreLockedError,
    UnknownVersionError,
    check_version_id,
)
from agent.device.store.stored_package import package_artifact, verify_package_files
from agent.wire.errors import KeyFormatError
from agent.wire.signing import TrustStore

log = logging.getLogger("edge_agent.lambda")

ENV_MODEL_STORE = "EDGE_MODEL_STORE"
ENV_INITIAL_PACKAGE = "EDGE_INITIAL_PACKAGE"
ENV_TRUSTED_KEYS = "EDGE_TRUSTED_KEYS"
ENV_STATE_DIR = "EDGE_STATE_DIR"
ENV_MODEL_DIR = "EDGE_MODEL_DIR"
ENV_ALLOW_UNSIGNED = "EDGE_ALLOW_UNSIGNED"
ENV_MIN_MODEL_VERSION = "EDGE_MIN_MODEL_VERSION"
ENV_GOLDEN_TIMEOUT = "EDGE_GOLDEN_TIMEOUT_SECONDS"
ENV_MAX_ROWS = "EDGE_MAX_ROWS"
ENV_NUM_THREADS = "EDGE_NUM_THREADS"
ENV_RESULT_TOPIC = "EDGE_RESULT_TOPIC"

DEFAULT_STATE_DIR = Path("/tmp/edge-lambda")
DEFAULT_MAX_ROWS = 1024
MAX_ROWS_LIMIT = 65536
STORE_LOCK_WAIT_S = 10.0
_VERSIONS = "versions"  # <store>/versions/<id>/{package,VERIFIED}: see agent.device.store.store
_POINTER = "current"

PointerStamp = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class LambdaSettings:
    """Everything the handler reads from its environment, checked once per process."""

    model_store: Path | None = None
    initial_package: Path | None = None
    model_dir: Path | None = None
    trust: TrustStore | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    min_model_version: int = 0
    golden_timeout_s: float = 10.0
    max_rows: int = DEFAULT_MAX_ROWS
    num_threads: int | None = None
    result_topic: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LambdaSettings:
        """Read and check the settings; :class:`ConfigError` names the variable at fault."""
        def path(name: str) -> Path | None:
            value = environ.get(name, "").strip()
            return Path(value) if value else None

        store, package, model_dir = (path(ENV_MODEL_STORE), path(ENV_INITIAL_PACKAGE),
                                     path(ENV_MODEL_DIR))
        given = [name for name, value in ((ENV_MODEL_STORE, store),
                                          (ENV_INITIAL_PACKAGE, package),
                                          (ENV_MODEL_DIR, model_dir)) if value is not None]
        if len(given) != 1:
            raise ConfigError(
                f"set exactly one of {ENV_MODEL_STORE} (the agent's state directory), "
                f"{ENV_INITIAL_PACKAGE} (a signed package) and {ENV_MODEL_DIR} (unsigned, "
                f"development only); got {', '.join(given) or 'none'}")
        if model_dir is not None and environ.get(ENV_ALLOW_UNSIGNED, "").strip() != "1":
            raise ConfigError(
                f"{ENV_MODEL_DIR} serves an unsigned model, for development only: set "
                f"{ENV_ALLOW_UNSIGNED}=1 to allow it, or serve a signed package "
                f"({ENV_INITIAL_PACKAGE}) or the agent's store ({ENV_MODEL_STORE})")
        trust = _trust(environ.get(ENV_TRUSTED_KEYS, ""))
        if package is not None and trust is None:
            raise ConfigError(f"{ENV_INITIAL_PACKAGE} needs {ENV_TRUSTED_KEYS}: a JSON object "
                              "of key id -> Ed25519 public key (PEM, raw base64, or a file "
                              "holding either)")
        topic = environ.get(ENV_RESULT_TOPIC, "").strip() or None
        if topic is not None and any(c in topic for c in "+#"):
            raise ConfigError(f"{ENV_RESULT_TOPIC} {topic!r}: a topic to publish to cannot "
                              "hold the wildcards + or #")
        return cls(
            model_store=store, initial_package=package, model_dir=model_dir, trust=trust,
            state_dir=path(ENV_STATE_DIR) or DEFAULT_STATE_DIR,
            min_model_version=_int(environ, ENV_MIN_MODEL_VERSION, 0, low=0),
            golden_timeout_s=float(_int(environ, ENV_GOLDEN_TIMEOUT, 10, low=1)),
            max_rows=_int(environ, ENV_MAX_ROWS, DEFAULT_MAX_ROWS, low=1, high=MAX_ROWS_LIMIT),
            num_threads=_int(environ, ENV_NUM_THREADS, 0, low=1) or None,
            result_topic=topic)

    @property
    def store_root(self) -> Path | None:
        """The agent's store folder in ``EDGE_MODEL_STORE`` mode, else None."""
        if self.model_store is None:
            return None
        nested = self.model_store / "models"
        return nested if nested.is_dir() else self.model_store

    def dlr_config(self) -> DlrConfig:
        # The installed libdlr (EDGE_AGENT_LIBDLR, the dlr wheel's, variant.DLR's, ...).
        return DlrConfig(num_threads=self.num_threads)

    def package_config(self, backend: str) -> BackendConfig:
        """The settings a package of ``backend`` (its manifest's) loads with here:
        ``EDGE_NUM_THREADS`` applies to either runtime."""
        if backend == "onnx":
            return OnnxConfig(intra_op_threads=self.num_threads)
        return self.dlr_config()


def _trust(text: str) -> TrustStore | None:
    if not text.strip():
        return None
    try:
        keys = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{ENV_TRUSTED_KEYS} is not JSON: {err}") from err
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"{ENV_TRUSTED_KEYS} must be a non-empty JSON object of key id -> "
                          "public key")
    try:
        return TrustStore.from_config({"keys": keys})
    except KeyFormatError:
        raise  # word for word what serve --trusted-key and trustedKeys say of the same key
    except AgentError as err:
        raise ConfigError(f"{ENV_TRUSTED_KEYS}: {err}") from err


def _int(environ: Mapping[str, str], name: str, default: int, *, low: int,
         high: int | None = None) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from err
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


@dataclass(frozen=True)
class LoadedModel:
    """A backend ready to bind, what to call it, and where it came from."""

    backend: Backend
    label: str
    version: str | None  # the store's version id; None for an unsigned directory
    stamp: PointerStamp | None = None  # the store pointer it was read from (store mode)


def load_model(settings: LambdaSettings) -> LoadedModel:
    """Load the model ``settings`` name; a typed :class:`AgentError` otherwise."""
    root = settings.store_root
    if root is not None:
        return _from_store(root, settings)
    if settings.initial_package is not None:
        return _from_package(settings.initial_package, settings)
    assert settings.model_dir is not None
    return _from_model_dir(settings.model_dir, settings)


# ---- the agent's store, read in place -------------------------------------------------

def pointer_stamp(root: Path) -> PointerStamp | None:
    """Identity of the store's ``current`` file: the store replaces it by a rename, so a
    new pointer is a new inode. None while there is none."""
    try:
        st = os.stat(root / _POINTER)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def current_version(root: Path) -> str:
    """The version id the store's ``current`` pointer names, if that version is complete."""
    path = root / _POINTER
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"the model store {root} has no current model yet (has the "
                                   "agent installed its first model?)") from err
    except (OSError, ValueError) as err:
        raise StoreCorruptError(f"{path}: {err}") from err
    version_id = obj.get("version_id") if isinstance(obj, dict) else None
    if not isinstance(version_id, str):
        raise StoreCorruptError(f"{path}: no version_id")
    check_version_id(version_id)
    if not (root / _VERSIONS / version_id / VERIFIED).is_file():
        raise UnknownVersionError(f"{root}: current version {version_id} is not complete")
    return version_id


def _from_store(root: Path, settings: LambdaSettings) -> LoadedModel:
    stamp = pointer_stamp(root)  # before reading: a pointer moved meanwhile shows next time
    version_id = current_version(root)
    package = root / _VERSIONS / version_id / PACKAGE
    try:
        verify_package_files(package)
        if settings.trust is not None:
            verify_manifest(read_manifest_doc(package), settings.trust)
        artifact = package_artifact(package)
    except (OSError, ValueError, KeyError, TypeError, PackageFormatError) as err:
        raise StoreCorruptError(f"version {version_id} in {root}: {err}") from err
    backend = artifact.load(settings.package_config(artifact.backend))
    log.info("serving %s (%s) from the agent's store %s", artifact.label, version_id, root)
    return LoadedModel(backend, artifact.label, version_id, stamp)


# ---- a signed package, installed into the Lambda's own store ---------------------------

def _from_package(location: Path, settings: LambdaSettings) -> LoadedModel:
    assert settings.trust is not None
    profile = detect_profile()
    store = _open_store(settings.state_dir / "models")
    try:
        store.recover(verify=verify_package_files)
        package = choose_package(location, profile)
        if store.current() != _expected_version_id(package):
            work_dir = settings.state_dir / "staging"
            remove_stale_staging(work_dir)  # the store's lock is ours: no stage() runs
            install_first_model(package, store=store, trust=settings.trust, profile=profile,
                                work_dir=work_dir, min_version=settings.min_model_version,
                                golden_timeout_s=settings.golden_timeout_s,
                                backend_config=settings.dlr_config())
            store.prune()
        version_id = store.current()
        if version_id is None:  # install_first_model makes one current or raises
            raise ArtifactMissingError(f"{location}: no model was installed")
        artifact = package_artifact(store.path(version_id))
    finally:
        store.close()  # the versions stay; another instance of the function may install
    backend = artifact.load(settings.package_config(artifact.backend))
    log.info("serving %s (%s) from the signed package %s", artifact.label, version_id,
             package.name)
    return LoadedModel(backend, artifact.label, version_id)


def _open_store(root: Path) -> ModelStore:
    """The store, waiting a little for another instance of the function to finish with it."""
    deadline = time.monotonic() + STORE_LOCK_WAIT_S
    while True:
        try:
            return ModelStore(root)
        except StoreLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _expected_version_id(package: Path) -> str | None:
    """The store id :func:`install_first_model` gives ``package`` (``v<version>-<sha12>``),
    read without verifying anything: only to skip staging a package already current.
    None when unreadable, which stages it (and staging reports why)."""
    try:
        raw = read_manifest_member(package, max_bytes=PackageLimits().max_manifest_bytes)
        version = int(json.loads(raw)["version"])
        digest = hashlib.sha256()
        with package.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except (AgentError, OSError, ValueError, KeyError, TypeError):
        return None
    return version_id_of(version, digest.hexdigest())


# ---- an unsigned model directory (development) -----------------------------------------

def _from_model_dir(model_dir: Path, settings: LambdaSettings) -> LoadedModel:
    resolved = resolve_model(model_dir, backend="dlr", profile=detect_profile())
    label = (model_label(read_model_info(resolved.model_dir)) if resolved.model_dir is not None
             else model_dir.name)
    backend = load_backend(resolved.load_dir, settings.dlr_config())
    log.warning("serving the UNSIGNED model %s from %s (%s=1: development only)", label,
                resolved.load_dir, ENV_ALLOW_UNSIGNED)
    return LoadedModel(backend, label, None)
