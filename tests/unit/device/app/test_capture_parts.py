"""Capture's parts in one process, on the real digits model: off builds nothing (no
directory, no thread, no hook); on, the loop's sampled inferences are stored, sealed and
uploaded to a folder, counted in the metrics, and the writer is flushed on stop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.device.app.capture_parts import Online, build_capture
from agent.device.capture.config import CaptureConfig
from agent.device.capture.record import decode
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, load_backend


class Outbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, kind: str, detail: str, **_fields: Any) -> None:
        self.events.append((kind, detail))


@pytest.fixture
def router(built_models: Path) -> VariantRouter:
    model = built_models / "digits-v1"
    backend = load_backend(resolve_model(model, backend="dlr", profile=detect_profile())
                           .load_dir, DlrConfig())
    x, y = load_testset(model / "testset.npz")
    loop = InferenceLoop(backend=backend, rate_hz=0,
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=y))
    return VariantRouter(loop=loop, blue_version="digits-v1")


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_capture_off_builds_nothing(tmp_path: Path, router: VariantRouter) -> None:
    before, step = _threads(), router.loop.step
    parts = build_capture(CaptureConfig(), thing="dev-1", state_dir=tmp_path, router=router,
                          model="digits", metadata=None, outbox=Outbox())  # type: ignore[arg-type]
    assert parts is None and list(tmp_path.iterdir()) == []
    assert _threads() == before and router.loop.step is step
    router.loop.close()


def test_capture_on_stores_seals_uploads_and_counts(tmp_path: Path,
                                                     router: VariantRouter) -> None:
    export = tmp_path / "export"
    export.mkdir()
    config = CaptureConfig.model_validate({
        "enabled": True, "rules": {"sampleRate": 0.5, "seed": 1}, "maxPerHour": 100,
        "queueSize": 1024, "batch": {"maxCaptures": 16},
        "upload": {"kind": "folder", "folder": str(export), "bandwidthBytesPerSecond": 0,
                   "retryInitialSeconds": 0.1}})
    outbox = Outbox()
    parts = build_capture(config, thing="dev-1", state_dir=tmp_path / "state", router=router,
                          model="digits", metadata=None, outbox=outbox)  # type: ignore[arg-type]
    assert parts is not None and parts.uploader is not None
    parts.online = Online()
    parts.start()
    assert {"capture-writer", "capture-upload"} <= _threads()
    router.loop.run(max_inferences=400)
    assert parts.writer.flush(10)
    parts.store.seal()
    deadline = time.monotonic() + 30
    while parts.store.batches() and time.monotonic() < deadline:
        time.sleep(0.05)  # the uploader thread sends every sealed batch
    assert parts.store.batches() == []
    parts.stop()
    assert "capture-writer" not in _threads()
    metrics = parts.metrics()
    assert metrics is not None
    assert metrics.stored == 100 and metrics.dropped_rate > 0, "the per-hour cap held"
    assert metrics.dropped_queue == 0
    assert metrics.fired["sample"] == metrics.stored + metrics.dropped_rate
    assert metrics.batches_uploaded == 7 and metrics.uploaded_captures == 100
    assert metrics.rules_from == "configuration" and metrics.enabled
    batches = sorted((export / "captures" / "dev-1").glob("*/batch.json"))
    assert batches, "sealed batches reached the folder"
    assert sum(json.loads(b.read_text())["count"] for b in batches) == 100
    assert list((tmp_path / "state" / "capture").glob("**/*.npz")) == []
    some = decode(next(batches[0].parent.glob("*.npz")).read_bytes())
    assert some.rule == "sample" and some.variants == {"blue": "digits-v1"}
    assert outbox.events == []
    router.loop.close()
