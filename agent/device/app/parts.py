"""The running agent's composition root: every part built once, in dependency order, and
kept in one typed container. Building starts nothing: threads, the transport and the
Greengrass streams are started by :class:`agent.device.app.service.AgentService`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.device.app.api import LocalApi
from agent.device.app.capture_parts import CaptureParts, build_capture
from agent.device.app.commands import CommandProcessor
from agent.device.app.config import AgentConfig
from agent.device.app.config_reload import ConfigReloader
from agent.device.app.inference import InferenceWorker
from agent.device.app.reports import Reports
from agent.device.app.scheduler import Scheduler
from agent.device.app.stage_control import package_dirs
from agent.device.app.startup import (
    device_profile,
    device_root,
    initial_model,
    model_description,
    open_store,
)
from agent.device.app.swaps import SwapController
from agent.device.capture.control import refuse_all
from agent.device.greengrass.component import GreengrassComponent
from agent.device.greengrass.updates import UpdatePolicy
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.shm import ring_name
from agent.device.inference.sources import SourceOptions, make_source_factory
from agent.device.platform.profile import DeviceProfile
from agent.device.results.build import build_stream
from agent.device.results.stream import ResultStream
from agent.device.store.recovery import RecoveryReport
from agent.device.store.store import ModelStore
from agent.device.telemetry.health import HealthProbe
from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.wire.gate import CommandGate
from agent.wire.replay import ReplayGuard
from agent.wire.sequence import SequenceCounter
from agent.wire.signing import TrustStore
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics


@dataclass(frozen=True, kw_only=True)
class AgentParts:
    """Everything one running agent is made of, each part built once."""

    profile: DeviceProfile
    topics: Topics
    store: ModelStore
    recovery: RecoveryReport  # what recovering the store on start did
    router: VariantRouter
    worker: InferenceWorker
    stamper: Stamper
    spool: Spool
    outbox: Outbox
    swaps: SwapController
    health: HealthProbe
    reports: Reports
    commands: CommandProcessor
    settings: ConfigReloader
    scheduler: Scheduler
    api: LocalApi
    results: ResultStream | None = None  # None: results are published nowhere
    capture: CaptureParts | None = None  # None: capture is off (nothing built)


def build_parts(config: AgentConfig, *, greengrass: GreengrassComponent | None,
                updates: UpdatePolicy, stop_event: threading.Event,
                started_at: float) -> AgentParts:
    profile = device_profile(config)
    topics = Topics(thing=config.thing_name, prefix=config.topic_prefix)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    trust = TrustStore.from_text(config.trusted_keys, revoked=config.revoked_key_ids)
    store, recovery = open_store(config, trust, profile)
    backend, blue_version, testset = initial_model(config, store, profile)
    loop = InferenceLoop(backend=backend, rate_hz=0.0 if config.source == "shm"
                         else config.rate_hz, make_source=make_source_factory(
                             config.source, backend, testset, config.rate_hz, SourceOptions(
                                 path=config.source_path, loop=config.source_loop,
                                 shm_name=ring_name(config.shm_name, config.thing_name),
                                 shm_slots=config.shm_slots,
                                 metadata=model_description(config, store)[1])),
                         requests=RequestQueue(config.server.queue_size))
    spool = Spool(path=config.state_dir / "spool.db", budget_bytes=config.spool_max_bytes,
                  results_budget_bytes=config.results.spool_max_bytes)
    model_name, model_metadata = model_description(config, store)
    results = build_stream(config.results, topics=topics, model=model_name,
                           metadata=model_metadata, outputs=backend.outputs,
                           source=loop.source, version=blue_version, spool=spool,
                           connection=greengrass.connection if greengrass else None)
    router = VariantRouter(loop=loop, blue_version=blue_version, results=results)
    stamper = Stamper(thing=config.thing_name,
                      counter=SequenceCounter(path=config.state_dir / "sequence"))
    outbox = Outbox(stamper=stamper, topics=topics, spool=spool)
    guard = ReplayGuard(thing=config.thing_name, groups=config.thing_groups,
                        state_path=config.state_dir / "replay.json")
    swaps = SwapController(
        router=router, store=store, trust=trust, guard=guard, profile=profile,
        work_dir=config.state_dir / "staging", outbox=outbox, updates=updates,
        guardrails=config.guardrails, min_version=config.min_model_version,
        trial_s=config.trial_seconds, golden_timeout_s=config.golden_timeout_seconds,
        backend_config=config.backend, limits=config.package_limits,
        package_dirs=package_dirs(config))
    health = HealthProbe(root=device_root(config), disk_path=config.state_dir)
    capture = build_capture(config.capture, thing=config.thing_name,
                            state_dir=config.state_dir, router=router, model=model_name,
                            metadata=model_metadata, outbox=outbox)
    reports = Reports(config=config, profile=profile, stamper=stamper, router=router,
                      swaps=swaps, outbox=outbox, spool=spool, health=health,
                      started_at=started_at, results=results,
                      capture=capture.metrics if capture is not None else None)
    commands = CommandProcessor(gate=CommandGate(trust=trust, guard=guard), outbox=outbox,
                                handlers={"status": reports.status,
                                          "announce": reports.announce, **swaps.handlers(),
                                          "capture": capture.control.handle if capture
                                          is not None else refuse_all(outbox)},
                                limits=config.commands, interrupt=swaps.interrupt)
    settings = ConfigReloader(config=config, greengrass=greengrass, outbox=outbox)
    worker = InferenceWorker(loop=loop)
    name, metadata = model_description(config, store)
    api = LocalApi(config=config.server, router=router, name=name, metadata=metadata,
                   ready=worker.is_alive, work_dir=config.state_dir)
    scheduler = Scheduler(settings=settings, reports=reports, swaps=swaps, health=health,
                          worker=worker, outbox=outbox, stop_event=stop_event)
    return AgentParts(profile=profile, topics=topics, store=store, recovery=recovery,
                      router=router, worker=worker, stamper=stamper, spool=spool,
                      outbox=outbox, swaps=swaps, health=health, reports=reports,
                      commands=commands, settings=settings, scheduler=scheduler, api=api,
                      results=results, capture=capture)
