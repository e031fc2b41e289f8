"""Capture inside the running agent: the store, the writer and uploader threads, the rules'
tap on the router, and the ``capture`` command's handler, built from ``capture``.

Capture off (the default: ``capture.enabled`` false) builds nothing: no directory, no
thread, no hook on the inference path; the ``capture`` command is then refused with a
``capture_rules_rejected`` event. On, the store lives in ``<stateDir>/capture``, batches
go where ``capture.upload`` says (nowhere with ``kind: none``: they stay on the device,
inside the budget) and the metrics message carries the capture counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.core.model_metadata import ModelMetadata
from agent.device.capture.config import CaptureConfig, CaptureRules
from agent.device.capture.control import CaptureControl
from agent.device.capture.destinations import make_destination
from agent.device.capture.store import CaptureStore
from agent.device.capture.tap import CaptureTap, loop_frame_info
from agent.device.capture.upload import BatchUploader
from agent.device.capture.writer import CaptureWriter
from agent.device.inference.router import VariantRouter
from agent.device.uplink.outbox import Outbox
from agent.wire.fields import MAX_TEXT
from agent.wire.messages import CaptureMetrics

log = logging.getLogger("edge_agent.capture")
CAPTURE_DIR = "capture"


@dataclass
class Online:
    """Whether uploads may go now: the transport's connected state once the service
    has one (:attr:`check`), else always."""

    check: Callable[[], bool] | None = None

    def __call__(self) -> bool:
        check = self.check
        return True if check is None else bool(check())


@dataclass
class CaptureParts:
    """The capture side of one agent (see the module's documentation)."""

    config: CaptureConfig
    store: CaptureStore
    writer: CaptureWriter
    control: CaptureControl
    uploader: BatchUploader | None = None
    online: Online = field(default_factory=Online)

    def start(self) -> None:
        """Rules in force on the router, then the writer and uploader threads (before the
        inference thread starts, so the first inference is already watched)."""
        self.control.start()
        self.writer.start()
        if self.uploader is not None:
            self.uploader.start()
        log.info("capture on: rules %s, budget %d bytes, at most %d an hour, upload %s",
                 self.control.in_force.rules.model_dump(mode="json"),
                 self.control.in_force.budget_bytes, self.control.in_force.max_per_hour,
                 self.config.upload.kind)

    def stop(self) -> None:
        """Stop the uploader (a batch being sent stays, sent again later), then the writer
        (what is queued is written first)."""
        if self.uploader is not None:
            self.uploader.stop()
        self.writer.stop()

    def metrics(self) -> CaptureMetrics | None:
        """The metrics message's ``capture`` counts (None, logged, if they do not fit its
        schema: the rest of the metrics go out regardless)."""
        counts: dict[str, Any] = {}
        if self.uploader is not None:
            counts.update(self.uploader.counts())
        counts.update(self.store.counts().to_dict())
        rules = self.control.counts()
        # picks over the per-hour cap: refused by the store, or dropped by the tap first
        rules["dropped_rate"] = counts.get("dropped_rate", 0) + rules.pop("skipped_rate", 0)
        counts.update(rules)
        known = CaptureMetrics.model_fields
        fields = {key: value[:MAX_TEXT] if isinstance(value, str) else value
                  for key, value in counts.items() if key in known}
        try:
            return CaptureMetrics.model_validate(fields, strict=False)
        except ValidationError as err:
            log.warning("capture counts left out of the metrics: %s", err)
            return None


def build_capture(config: CaptureConfig, *, thing: str, state_dir: Path, router: VariantRouter,
                  model: str, metadata: ModelMetadata | None,
                  outbox: Outbox) -> CaptureParts | None:
    """Capture's parts when the configuration enables it (None otherwise: nothing built;
    also when its store cannot be opened, which is logged and reported in an
    ``agent_error`` event: the agent serves on without capture)."""
    if not config.enabled:
        return None
    root = state_dir / CAPTURE_DIR
    try:
        store = CaptureStore(root, thing=thing, model=model, budget_bytes=config.budget_bytes,
                             max_per_hour=config.max_per_hour,
                             max_capture_bytes=config.max_capture_bytes, batch=config.batch)
    except OSError as err:  # the agent serves on without capture
        log.error("capture is configured but its store %s cannot be opened: %s", root, err)
        outbox.event("agent_error", f"capture off: its store {root} cannot be opened: "
                     f"{err}"[:1024])
        return None
    writer = CaptureWriter(store, queue_size=config.queue_size)
    loop = router.loop
    backend = loop.backend
    inputs = [(spec.name, buffer) for spec, buffer in zip(backend.inputs, loop.inputs,
                                                          strict=True)]
    outputs = [spec.name for spec in backend.outputs]
    source_name = str(getattr(loop.source, "name", "loop"))
    frame_info = loop_frame_info(loop.source, lambda: loop.steps_done)

    def build_tap(rules: CaptureRules, max_per_hour: int) -> CaptureTap:
        return CaptureTap(rules, thing=thing, model=model, inputs=inputs,
                          output_names=outputs, source_name=source_name,
                          frame_info=frame_info, roles=router.roles, offer=writer.offer,
                          metadata=metadata, max_per_hour=max_per_hour)

    control = CaptureControl(config=config, state_path=root, build_tap=build_tap,
                             router=router, store=store, outbox=outbox)
    online = Online()
    uploader = None
    destination = make_destination(config.upload, thing)
    if destination is not None:
        upload = config.upload
        uploader = BatchUploader(store, destination, thing=thing,
                                 bandwidth_bytes_per_second=upload.bandwidth_bytes_per_second,
                                 retry_initial_s=upload.retry_initial_seconds,
                                 retry_max_s=upload.retry_max_seconds, online=online)
    return CaptureParts(config=config, store=store, writer=writer, control=control,
                        uploader=uploader, online=online)
