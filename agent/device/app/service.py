"""The long-running agent: one process, several threads, nothing on the inference path
that waits for the network.

    inference thread   InferenceLoop.run (paced or source-driven)
    main thread        schedule: heartbeat, metrics, dropped-metrics events
    commands thread    gate -> handler -> ack (CommandProcessor)
    drainer thread     spool -> transport, confirmed deliveries only (SpoolDrainer)
    transport threads  awscrt / Greengrass IPC callbacks, which only enqueue

Under a Greengrass nucleus the transport is IPC and configuration comes from
the component's configuration (changes apply live); otherwise it is direct
MQTT, or none at all (offline: everything waits in the spool).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from agent import __version__
from agent.cli.run import make_source_factory
from agent.core.errors import AgentError, ConfigError
from agent.core.model_layout import MODEL_INFO, TESTSET, model_label, read_model_info
from agent.device.app.commands import CommandProcessor, Result
from agent.device.app.config import AgentConfig
from agent.device.app.first_model import install_first_model, offered_version
from agent.device.app.inference import InferenceWorker
from agent.device.app.swaps import SwapController, package_artifact, verify_package_files
from agent.device.greengrass.updates import UpdatePolicy
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend
from agent.device.runtime.base import Backend
from agent.device.store.store import ModelStore
from agent.device.telemetry.emf import emf_lines
from agent.device.telemetry.health import HealthProbe
from agent.device.telemetry.metrics import MetricsReporter, VariantSource
from agent.device.uplink.drain import SpoolDrainer
from agent.device.uplink.ipc import IpcTransport
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.tools.boards import board_root
from agent.wire.commands import Command
from agent.wire.gate import CommandGate
from agent.wire.messages import Heartbeat, Metrics, Register, State
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.signing import TrustStore
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics
from agent.wire.transport import Transport, TransportError

log = logging.getLogger("edge_agent")
GUARDRAIL_PERIOD_S = 0.25


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


class AgentService:
    """Wires the loop, telemetry, commands, spool and transport; ``run`` until stopped."""

    def __init__(self, *, config: AgentConfig, transport: Transport | None = None) -> None:
        self.config = config
        self.transport = transport
        self.stop_event = threading.Event()
        self._started_at = time.monotonic()
        self._config_changed = threading.Event()
        self.ipc = transport if isinstance(transport, IpcTransport) else None
        self.updates = UpdatePolicy()

    # ---- start ----------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        sys.setswitchinterval(config.gil_switch_interval_seconds)
        self.profile = self._profile(config)
        self.topics = Topics(thing=config.thing_name, prefix=config.topic_prefix)
        config.state_dir.mkdir(parents=True, exist_ok=True)

        self.store = ModelStore(config.state_dir / "models", keep=config.keep_versions)
        recovery = self.store.recover(verify=verify_package_files)
        trust = TrustStore.from_text(config.trusted_keys, revoked=config.revoked_key_ids)
        if self.store.current() is None and config.initial_package is not None:
            install_first_model(config.initial_package, store=self.store, trust=trust,
                                profile=self.profile, work_dir=config.state_dir / "staging",
                                min_version=config.min_model_version,
                                golden_timeout_s=config.golden_timeout_seconds)
        backend, blue_version, testset = self._initial_model(config)
        loop = InferenceLoop(backend=backend, rate_hz=0.0 if config.source == "shm"
                             else config.rate_hz, make_source=make_source_factory(
                                 config.source, backend, testset, config.rate_hz))
        self.router = VariantRouter(loop=loop, blue_version=blue_version)
        self.worker = InferenceWorker(loop=loop)

        counter = SequenceCounter(path=config.state_dir / "sequence")
        self.stamper = Stamper(thing=config.thing_name, counter=counter)
        self.spool = Spool(path=config.state_dir / "spool.db",
                           budget_bytes=config.spool_max_bytes)
        self.outbox = Outbox(stamper=self.stamper, topics=self.topics, spool=self.spool)
        guard = ReplayGuard(thing=config.thing_name, groups=config.thing_groups,
                            state_path=config.state_dir / "replay.json")
        self.swaps = SwapController(
            router=self.router, store=self.store, trust=trust, guard=guard,
            profile=self.profile, work_dir=config.state_dir / "staging", outbox=self.outbox,
            updates=self.updates, guardrails=config.guardrails,
            min_version=config.min_model_version, trial_s=config.trial_seconds,
            golden_timeout_s=config.golden_timeout_seconds)
        self.commands = CommandProcessor(gate=CommandGate(trust=trust, guard=guard),
                                         outbox=self.outbox,
                                         handlers={"status": self._status,
                                                   "announce": self._announce,
                                                   **self.swaps.handlers()})
        self.updates.on_deferred = self._report_deferral
        self._report_unused_package(config)
        if recovery.reason:
            self.outbox.event("local_rollback", f"on start: {recovery.reason}"[:512],
                              data={"version": recovery.rolled_back_from or "",
                                    "current": recovery.current or ""})
        self.reporter = MetricsReporter()
        self.health = HealthProbe(root=self._device_root(config), disk_path=config.state_dir)

        self.worker.start()
        self.commands.start()
        self.register()
        self.drainer: SpoolDrainer | None = None
        if self.transport is not None:
            self._connect(self.transport)
        if self.ipc is not None:
            self.ipc.subscribe_to_configuration_update(lambda _path: self._config_changed.set())
            self.ipc.subscribe_to_component_updates(self.updates.handler(self.ipc))
            self.ipc.update_state("RUNNING")
        log.info("agent %s started: %s, model %s, transport %s", config.thing_name,
                 self.profile, self.router.blue.version,
                 self.transport.name if self.transport else "none (offline)")

    def _initial_model(self, config: AgentConfig) -> tuple[Backend, str, Path | None]:
        """The store's current version if there is one, else the configured model."""
        current = self.store.current()
        if current is not None:
            artifact, label = package_artifact(self.store.path(current))
            return load_backend(artifact, DlrConfig()), label, _testset(config)
        if config.model_dir is None:
            raise ConfigError("no model to serve: the store is empty and neither "
                              "initialPackage nor modelDir is set")
        resolved = resolve_model(config.model_dir, backend=config.backend, profile=self.profile)
        backend_config = DlrConfig() if config.backend == "dlr" else OnnxConfig()
        return (load_backend(resolved.load_dir, backend_config),
                model_version(resolved.model_dir or config.model_dir), resolved.testset)

    def _connect(self, transport: Transport) -> None:
        try:
            transport.connect(timeout_s=10.0)
        except TransportError as err:
            # Not fatal: the drainer keeps retrying and the spool keeps everything meanwhile.
            log.warning("transport %s not connected yet: %s", transport.name, err)
        for topic in (self.topics.commands,
                      *(self.topics.group_commands(g) for g in self.config.thing_groups)):
            try:
                transport.subscribe(topic, self.commands.on_message)
            except TransportError as err:
                log.warning("cannot subscribe to %s yet: %s", topic, err)
        self.drainer = SpoolDrainer(spool=self.spool, transport=transport,
                                    rate_limit_per_s=self.config.drain_rate_per_second)
        self.drainer.start()

    @staticmethod
    def _device_root(config: AgentConfig) -> Path:
        if config.board is not None:
            return board_root(config.board)
        return config.device_root or Path("/")

    def _profile(self, config: AgentConfig) -> DeviceProfile:
        if config.board is None and config.device_root is None:
            return detect_profile()
        return detect_profile(root=self._device_root(config), emulate=True)

    # ---- run ------------------------------------------------------------------------

    def run(self) -> None:
        """Heartbeats and metrics on schedule until ``stop_event`` is set."""
        now = time.monotonic()
        next_metrics = now + self.config.metrics_interval_seconds
        next_heartbeat = now
        next_check = now
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self._config_changed.is_set():
                self._config_changed.clear()
                self._reload_config()
                next_metrics = min(next_metrics, now + self.config.metrics_interval_seconds)
                next_heartbeat = min(next_heartbeat, now + self.config.heartbeat_interval_seconds)
            if now >= next_heartbeat:
                self.heartbeat()
                next_heartbeat = now + self.config.heartbeat_interval_seconds
            if now >= next_metrics:
                self.report_metrics()
                next_metrics = now + self.config.metrics_interval_seconds
            if now >= next_check:
                self._check_variants()
                next_check = now + GUARDRAIL_PERIOD_S
            if not self.worker.is_alive() and not self.stop_event.is_set():
                self.outbox.event("agent_error", f"inference stopped: {self.worker.failure!r}")
                break
            wait = min(next_metrics, next_heartbeat, next_check) - time.monotonic()
            self.stop_event.wait(max(0.0, min(wait, 1.0)))

    def _reload_config(self) -> None:
        if self.ipc is None:
            return
        try:
            new = self.config.merged(self.ipc.get_configuration())
        except (TransportError, ConfigError) as err:
            self.outbox.event("agent_error", f"configuration update ignored: {err}"[:512])
            return
        # Intervals apply live; the rest needs a restart (the recipe's run step does that).
        self.config = self.config.model_copy(update={
            "metrics_interval_seconds": new.metrics_interval_seconds,
            "heartbeat_interval_seconds": new.heartbeat_interval_seconds})
        log.info("configuration updated: metrics every %ss, heartbeat every %ss",
                 new.metrics_interval_seconds, new.heartbeat_interval_seconds)

    def _check_variants(self) -> None:
        limits = self.config.guardrails
        rss = temp = None
        if limits.max_rss_bytes is not None or limits.max_soc_temp_c is not None:
            snapshot = self.health.read()
            rss, temp = snapshot.rss_bytes, snapshot.soc_temp_c
        try:
            self.swaps.tick(rss_bytes=rss, soc_temp_c=temp)
        except AgentError as err:
            self.outbox.event("agent_error", f"variant check failed: {err}"[:512])

    def _report_unused_package(self, config: AgentConfig) -> None:
        """A model component only installs the first model: say so when a deployment
        brought a package version other than the one serving."""
        current = self.store.current()
        if config.initial_package is None or current is None:
            return
        offered = offered_version(config.initial_package, self.profile)
        serving = self.store.manifest(current).get("version")
        if offered is not None and offered != serving:
            self.outbox.event(
                "model_component_unused",
                f"the model component offers version {offered}; {self.router.blue.version} "
                f"(version {serving}) keeps serving: model changes go through rollouts",
                data={"offered": offered, "serving": str(serving)})

    def _report_deferral(self, deployment_id: str, reason: str) -> None:
        self.outbox.event("update_deferred", f"Greengrass deployment {deployment_id} "
                          f"deferred: {reason}"[:512],
                          data={"deployment_id": deployment_id[:128]})

    def register(self) -> None:
        """Tell the controller who this device is: on start, and on an ``announce``."""
        self.outbox.send(Register, groups=self.config.thing_groups,
                         profile=self.profile.to_dict(), agent_version=__version__,
                         boot_id=self.stamper.boot_id, models=self.router.models())

    def heartbeat(self) -> None:
        # Groups and profile ride along so that a controller that missed the register
        # knows the device within one heartbeat interval.
        self.outbox.send(Heartbeat, uptime_s=round(time.monotonic() - self._started_at, 3),
                         boot_id=self.stamper.boot_id, models=self.router.models(),
                         groups=self.config.thing_groups, profile=self.profile.to_dict())

    def report_metrics(self) -> None:
        rollout = self.swaps.rollout
        router = self.router
        roles = [("blue", router.blue)] + ([("green", router.green)] if router.green else [])
        variants = self.reporter.report([
            VariantSource(variant=name, model_version=role.version, stats=role.lane.stats,  # type: ignore[arg-type]
                          rollout_id=rollout.rollout_id if rollout else None,
                          rollout_seq=rollout.rollout_seq if rollout else None)
            for name, role in roles])
        message = self.outbox.send(Metrics, boot_id=self.stamper.boot_id, variants=variants,
                                   health=self.health.read().to_report())
        if message is not None and self.config.emit_emf:
            for line in emf_lines(message):
                self.outbox.send_raw("emf", line.encode())
        dropped = self.spool.take_dropped_metrics()
        if dropped:
            self.outbox.event("spool_dropped", f"{dropped} metrics report(s) dropped to stay "
                              "within the spool budget", data={"count": dropped})

    def _state_fields(self) -> dict[str, object]:
        router, swaps = self.router, self.swaps
        blue, green = router.weights
        fields: dict[str, object] = {"models": router.models(), "mode": router.mode,
                                     "weights": {"blue": blue, "green": green}}
        if swaps.rollout is not None:
            fields["rollout_id"] = swaps.rollout.rollout_id
            fields["rollout_seq"] = swaps.rollout.rollout_seq
        if router.green is not None and router.mode in ("shadow", "weighted"):
            fields["trial"] = {"candidate": router.green.version, "kind": router.mode,
                               "elapsed_s": round(time.monotonic() - router.green.since, 3)}
        elif swaps.trial_started is not None:
            fields["trial"] = {"candidate": router.blue.version, "kind": "weighted",
                               "elapsed_s": round(time.monotonic() - swaps.trial_started, 3)}
        return fields

    def _status(self, command: Command) -> Result:
        self.outbox.send(State, in_reply_to=command.command_id, **self._state_fields())
        return Result("ok")

    def _announce(self, _command: Command) -> Result:
        self.register()
        return Result("ok", "register sent")

    # ---- stop -----------------------------------------------------------------------

    def shutdown(self) -> int:
        """Stop serving, report the final state and flush within the configured time.

        Returns how many messages are still in the spool (they go out on next start).
        """
        self.stop_event.set()
        self.worker.stop()
        self.commands.stop()
        self.outbox.send(State, **self._state_fields())
        remaining = self.spool.count()
        if self.drainer is not None:
            remaining = self.drainer.flush(self.config.shutdown_flush_seconds)
            self.drainer.stop()
        if self.transport is not None:
            self.transport.close()
        self.worker.loop.close()
        self.spool.close()
        self.store.close()
        return remaining
