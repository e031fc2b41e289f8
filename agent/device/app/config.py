"""The agent's settings: one pydantic model read from a file, Greengrass configuration
(camelCase keys, as a recipe's ``DefaultConfiguration`` writes them) and the CLI.

``backend`` chooses and configures the runtime that serves a model directory: it holds one
member of :data:`agent.device.runtime.BackendConfig`, the runtimes' settings discriminated
by ``type``. A bare runtime name (``backend: dlr``, ``--backend onnx``) stands for that
runtime's default settings, and such settings are written back as the bare name; a mapping
(``backend: {type: dlr, numThreads: 2}``) sets them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from agent.core.errors import ConfigError
from agent.device.app.command_limits import CommandLimits
from agent.device.capture.config import CaptureConfig
from agent.device.inference.guardrails import Guardrails
from agent.device.inference.sources import SourceKind
from agent.device.packages.limits import PackageLimits
from agent.device.results.config import ResultsConfig
from agent.device.runtime import BackendConfig, DlrConfig
from agent.device.serving.config import ServerConfig
from agent.wire.keys import public_key_b64, trusted_public_key
from agent.wire.mqtt_config import MqttConfig
from agent.wire.topics import DEFAULT_PREFIX

# Greengrass-only keys the agent does not read (the nucleus enforces accessControl).
_IGNORED_KEYS = ("accessControl",)


class AgentConfig(BaseModel):
    """Every setting the agent reads; keys are camelCase in Greengrass configuration."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    thing_name: str = Field(min_length=1)
    thing_groups: list[str] = Field(default_factory=list)
    topic_prefix: str = DEFAULT_PREFIX
    model_dir: Path | None = Field(
        default=None, description="an unpackaged model directory (development; serves "
                                  "without a signature, so never under Greengrass)")
    initial_package: Path | None = Field(
        default=None, description="a signed model package (.tar.gz), or a folder of them "
                                  "such as a model component's artifacts: installed as the "
                                  "first blue model when the store is empty, through the "
                                  "same staging as every swap")
    backend: BackendConfig = Field(
        default_factory=DlrConfig,
        description="the runtime serving modelDir: its name (dlr, onnx) for its default "
                    "settings, or its settings with their type")
    source: SourceKind = Field(
        default="auto", description="testset (digits: its older name) replays the model's "
                                    "testset.npz; auto: that when there is one, else random; "
                                    "images, video, camera: sourcePath's frames; shm: frames "
                                    "a producer writes into the ring shmName; api: no loop, "
                                    "only the local inference API's requests")
    source_path: str | None = Field(
        default=None, description="images: a folder, glob or image file; video: a file or "
                                  "stream URL (rtsp://, http://); camera: a V4L2 device "
                                  "index or /dev/videoN; testset: an .npz to replay instead "
                                  "of the model's testset.npz (x, labels y optional)")
    source_loop: bool = Field(
        default=True, description="images and video files: start over at the end; false: "
                                  "the loop's source ends there (the API still answers)")
    shm_name: str | None = Field(
        default=None, description="source shm: the ring the agent creates for producers to "
                                  "attach to (default edge-agent-<thingName>; logged)")
    shm_slots: int = Field(default=8, ge=1, le=1024, description="source shm: ring slots")
    rate_hz: float = Field(default=20.0, ge=0, description="inferences/s; 0 = unpaced")
    metrics_interval_seconds: float = Field(default=10.0, gt=0)
    heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    emit_emf: bool = Field(default=False, description="also publish CloudWatch EMF documents")
    state_dir: Path = Path("state")
    spool_max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    drain_rate_per_second: float = Field(default=100.0, ge=0, description="0 = unlimited")
    transport: Literal["auto", "ipc", "mqtt"] = "auto"
    mqtt: MqttConfig | None = None
    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        description="controller key id -> Ed25519 public key: PEM text, base64, or the path "
                    "of a file holding either (relative to the working folder); held as "
                    "base64 once read")
    revoked_key_ids: list[str] = Field(default_factory=list)
    board: str | None = Field(default=None, description="emulate a bundled board")
    device_root: Path | None = None
    shutdown_flush_seconds: float = Field(default=5.0, ge=0)
    min_model_version: int = Field(default=0, ge=0, description="anti-rollback floor")
    trial_seconds: float = Field(default=600.0, gt=0, description="a promoted model's trial")
    golden_timeout_seconds: float = Field(default=10.0, gt=0)
    package_limits: PackageLimits = Field(
        default_factory=PackageLimits,
        description="what one package may cost to fetch and unpack (every stage, the first "
                    "model's too): sizes, member count, depth, name length, compression "
                    "ratio, the download's deadline and minimum rate (camelCase keys)")
    package_dirs: list[Path] | None = Field(
        default=None,
        description="the only folders a stage command's file:// URL may read a package "
                    "from (links and .. resolved; regular files only); unset: "
                    "<stateDir>/packages/inbox and initialPackage's folder; []: none")
    keep_versions: int = Field(default=3, ge=2)
    gil_switch_interval_seconds: float = Field(
        default=0.0005, gt=0, le=0.1,
        description="how long background Python work (staging, reports) may hold the "
                    "interpreter before the serving thread gets it back (CPython's default "
                    "is 5 ms, ten inferences at 2 kHz)")
    guardrails: Guardrails = Field(default_factory=Guardrails)
    server: ServerConfig = Field(
        default_factory=ServerConfig,
        description="the local inference API (Open Inference Protocol over HTTP on "
                    "127.0.0.1 and a Unix socket, and agent.client's native socket)")
    commands: CommandLimits = Field(
        default_factory=CommandLimits,
        description="what the command topics may cost: messages and bytes read a second "
                    "(the rest dropped unread), the largest command, and how many "
                    "refusals are answered one by one")
    results: ResultsConfig = Field(
        default_factory=ResultsConfig,
        description="prediction results published on Greengrass local pub/sub, AWS IoT "
                    "Core and a shared-memory ring, and the policy that picks them")
    capture: CaptureConfig = Field(
        default_factory=CaptureConfig,
        description="off by default: copies of the inputs (and every variant's outputs) of "
                    "the inferences its rules pick, kept on the device within a byte budget "
                    "and a per-hour cap, and uploaded in batches to S3 or a folder only when "
                    "upload names one")

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_by_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_serializer("backend", mode="wrap")
    def _backend_as_written(self, backend: BackendConfig,
                            handler: SerializerFunctionWrapHandler) -> Any:
        return backend.type if backend == type(backend)() else handler(backend)

    @field_validator("trusted_keys")
    @classmethod
    def _read_trusted_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        # KeyFormatError is no ValueError, so pydantic lets it through as it is: a bad key
        # reads the same here as through ``serve --trusted-key`` or the Lambda handler. Files
        # are read once, now, so what the agent trusts cannot change under it.
        return {key_id: public_key_b64(trusted_public_key(key_id, value))
                for key_id, value in keys.items()}

    def merged(self, overrides: Mapping[str, Any]) -> AgentConfig:
        """A copy with ``overrides`` (either key style) applied and validated."""
        data = self.model_dump(by_alias=True, mode="json", exclude_none=True)
        data.update(_clean(overrides))
        return load_config(data)


def _clean(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in _IGNORED_KEYS}


def load_config(raw: Mapping[str, Any]) -> AgentConfig:
    """Validate ``raw``; a wrong key or type is a ConfigError naming the key."""
    try:
        return AgentConfig.model_validate(_clean(raw))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid agent configuration: {problems}") from err


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML file of settings (either key style)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {err}") \
            from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return data
