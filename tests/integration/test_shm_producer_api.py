"""The named shared-memory ring and ``agent.producer``: a separate process attaches by name
and writes frames in place, the real colour model (DLR) classifies every one of them in
order with their ids, labels and capture times; a two-input model gets both inputs per
frame; with no producer the loop waits and still answers API requests; and every misuse
(a name taken by something else, a ring in use, a frame that does not fit, a full ring, a
closed ring) is a typed error that changes nothing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
from agent_process import AgentProcess
from foreign_neo import fusion_reference
from model_dirs import HOST_ARTIFACT, colour_model_dir, fusion_inputs, fusion_model_dir
from waits import wait_for

from agent.cli.serve import add_serve_arguments, config_from_args
from agent.core.errors import (
    ConfigError,
    InputSpecError,
    RingClosedError,
    RingError,
    RingFullError,
    SourceError,
)
from agent.device.app.config import load_config
from agent.device.app.inference import InferenceWorker
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.shm import ShmSource, ring_name
from agent.device.inference.sources import SourceOptions, make_source_factory
from agent.device.runtime import DlrBackend
from agent.device.serving.service import InferenceService, ServedModel
from agent.producer import FrameProducer
from agent.wire.shm_ring import W_OWNER, ShmRing

PRODUCER = """
import sys
from agent.producer import FrameProducer

name, count = sys.argv[1], int(sys.argv[2])
with FrameProducer.attach(name, wait_s=10) as producer:
    (spec,) = producer.inputs
    print(spec.name, spec.dtype, list(spec.shape), producer.slots, flush=True)
    for i in range(count):
        with producer.frame(timeout_s=10) as frame:  # waits while the agent is behind
            frame.array[...] = 0.05                  # the model's input, written in place
            frame.array[0, i % 3] = 0.9
            frame.label = i % 3
            frame.capture_time = 1000.0 + i
    print("published", producer.published, flush=True)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shm")
    return colour_model_dir(root / "colour"), fusion_model_dir(root / "fusion")


@pytest.fixture()
def name() -> str:
    return f"edge-agent-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _loop(model: Path, name: str, *, slots: int = 4,
          requests: RequestQueue | None = None) -> InferenceLoop:
    backend = DlrBackend(artifact_dir=model / "dlr" / HOST_ARTIFACT)
    try:
        return InferenceLoop(backend=backend, requests=requests, make_source=make_source_factory(
            "shm", backend, None, 0.0, SourceOptions(shm_name=name, shm_slots=slots)))
    except BaseException:
        backend.close()
        raise


def test_a_producer_process_feeds_the_named_ring(models: tuple[Path, Path], name: str,
                                                 tmp_path: Path) -> None:
    script = tmp_path / "camera.py"
    script.write_text(PRODUCER)
    loop = _loop(models[0], name)
    producer = subprocess.Popen([sys.executable, str(script), name, "30"],
                                stdout=subprocess.PIPE, text=True)
    try:
        seen = []
        for _ in range(30):
            loop.run(max_inferences=1, duration_s=20)
            source = loop.source
            assert isinstance(source, ShmSource)
            seen.append((source.frame_id, source.frame_time, int(loop.outputs[0].argmax())))
        out, _ = producer.communicate(timeout=20)
    finally:
        producer.kill()
        loop.close()
    assert producer.returncode == 0
    assert out.splitlines() == ["pixels float32 [1, 3, 8, 8] 4", "published 30"]
    assert seen == [(i + 1, 1000.0 + i, i % 3) for i in range(30)]  # every frame, in order
    assert loop.stats.checked == 30 and loop.stats.accuracy == 1.0  # by the labels given


def test_a_two_input_model_gets_one_array_per_input(models: tuple[Path, Path],
                                                    name: str) -> None:
    loop = _loop(models[1], name, slots=2)
    cases = fusion_inputs(3, seed=5)
    try:
        with FrameProducer.attach(name) as producer:
            assert [(i.name, str(i.dtype), i.shape) for i in producer.inputs] == [
                ("sensor_frame", "float32", (1, 6)), ("event_counts", "int32", (1, 3))]
            for i in range(3):
                with producer.frame() as frame:
                    frame["sensor_frame"][...] = cases["sensor_frame"][i]
                    frame.put(cases["event_counts"][i][0], "event_counts")  # batch left out
                loop.run(max_inferences=1, duration_s=10)
                expected = fusion_reference(cases["sensor_frame"][i], cases["event_counts"][i])
                np.testing.assert_allclose(loop.outputs[0], expected["Identity:0"], rtol=1e-6)
                np.testing.assert_array_equal(loop.outputs[1], expected["Identity_1:0"])
    finally:
        loop.close()


def test_with_no_producer_the_loop_waits_and_answers_requests(models: tuple[Path, Path],
                                                              name: str) -> None:
    loop = _loop(models[0], name, requests=RequestQueue(4))
    router = VariantRouter(loop=loop, blue_version="colour-v1")
    service = InferenceService(router=router, queue=loop.requests,  # type: ignore[arg-type]
                               model=ServedModel("colour", "dlr", loop.backend.inputs,
                                                 loop.backend.outputs))
    worker = InferenceWorker(loop=loop)
    worker.start()
    try:
        green = np.zeros((1, 3, 8, 8), np.float32)
        green[0, 1] = 1.0
        started = time.monotonic()
        answer = service.infer({"pixels": green}, timeout_s=2)
        assert int(answer.outputs[0].argmax()) == 1 and time.monotonic() - started < 1
        assert loop.source.frame_id == 0 and worker.is_alive()  # type: ignore[attr-defined]
        with FrameProducer.attach(name) as producer:
            producer.write(green, label=1)
        deadline = time.monotonic() + 5
        while loop.source.frame_id == 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        assert loop.source.frame_id == 1  # type: ignore[attr-defined]
    finally:
        worker.stop()
        loop.close()


def test_a_frame_that_does_not_fit_publishes_nothing(models: tuple[Path, Path],
                                                     name: str) -> None:
    loop = _loop(models[0], name, slots=2)
    try:
        source = loop.source
        assert isinstance(source, ShmSource)
        with FrameProducer.attach(name) as producer:
            for bad, why in ((np.zeros((32, 32, 3), np.uint8), r"uint8\[32, 32, 3\]"),
                             (np.zeros((1, 3, 8, 8), np.float64), r"float64\[1, 3, 8, 8\]")):
                with pytest.raises(InputSpecError, match=r"ring '.*' input 'pixels' is "
                                                         r"float32\[1, 3, 8, 8\]; this frame "
                                                         r"is " + why):
                    producer.write(bad)
            with pytest.raises(InputSpecError, match=r"frames hold 1 input\(s\) \(pixels\)"):
                producer.write({"image": np.zeros((1, 3, 8, 8), np.float32)})
            with pytest.raises(ValueError), producer.frame() as frame:
                frame.array[...] = np.zeros((4, 4))  # fails in the block: not published
            assert not source.ready() and producer.published == 0
            producer.write(np.ones((1, 3, 8, 8), np.float32))
            producer.write(np.ones((3, 8, 8), np.float32))
            with pytest.raises(RingFullError, match=r"all 2 slots unread"):
                producer.frame(timeout_s=0)  # a camera drops this frame and goes on
            assert source.ready() and producer.published == 2
        loop.run(max_inferences=2, duration_s=5)
        assert loop.stats.inferences == 2 and source.frame_id == 2
        attached = FrameProducer.attach(name)
    finally:
        loop.close()
    with pytest.raises(RingClosedError, match=r"the agent closed ring"):
        attached.frame(timeout_s=1)
    attached.close()
    with pytest.raises(RingError, match=r"no shared-memory ring"):
        FrameProducer.attach(name)


def test_ring_names_taken_by_something_else(models: tuple[Path, Path], name: str) -> None:
    other = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        assert other.buf is not None
        other.buf[:5] = b"hello"
        with pytest.raises(SourceError, match=r"shared memory '.*' exists and is not an "
                                              r"edge-agent ring: choose another ring name"):
            _loop(models[0], name)
        with pytest.raises(RingError, match=r"is not an edge-agent ring"):
            FrameProducer.attach(name)
        assert bytes(other.buf[:5]) == b"hello"  # left as it was
    finally:
        other.close()
        other.unlink()
    held = ShmRing.create([("pixels", "float32", (1, 3, 8, 8))], name=name)
    try:
        held.words[W_OWNER] = os.getppid()  # another agent, alive
        with pytest.raises(SourceError, match=r"in use by the agent of process"):
            _loop(models[0], name)
        dead = subprocess.Popen(["true"])
        dead.wait()
        held.words[W_OWNER] = dead.pid  # an agent that is gone: its ring is replaced
        stale = FrameProducer.attach(name)
        loop = _loop(models[0], name)
        try:
            with pytest.raises(RingClosedError):
                stale.frame(timeout_s=0)  # its producer is told to attach again
            stale.close()
            with FrameProducer.attach(name) as fresh:
                fresh.write(np.ones((1, 3, 8, 8), np.float32))
            loop.run(max_inferences=1, duration_s=5)
            assert loop.source.frame_id == 1  # type: ignore[attr-defined]
        finally:
            loop.close()
    finally:
        held.close()
    with pytest.raises(SourceError, match=r"ring name 'a/b': 1 to 200 characters"):
        _loop(models[0], "a/b")
    assert ring_name(None, "kitchen-cam") == "edge-agent-kitchen-cam"
    assert ring_name("cams", "kitchen-cam") == "cams"


def test_the_real_agent_creates_the_configured_ring_for_a_camera_process(
        models: tuple[Path, Path], name: str, tmp_path: Path) -> None:
    """``edge-agent serve --source shm --shm-name N``: the ring is created under N and
    logged, and a camera process pushes 30 frames through its 8 slots (so the agent read
    them); when the agent stops, the ring's name is gone."""
    script = tmp_path / "camera.py"
    script.write_text(PRODUCER)
    agent = AgentProcess(thing="shm-cam", model=models[0], state_dir=tmp_path / "state",
                         broker_port=None, log_path=tmp_path / "agent.log", rate=0,
                         extra=["--source", "shm", "--shm-name", name]).start()
    try:
        wait_for(lambda: f"source shm: ring '{name}' created" in agent.log(), timeout_s=60)
        camera = subprocess.run([sys.executable, str(script), name, "30"], timeout=60,
                                capture_output=True, text=True)
        assert camera.returncode == 0, camera.stderr
        assert camera.stdout.splitlines() == ["pixels float32 [1, 3, 8, 8] 8", "published 30"]
    finally:
        assert agent.stop() == 0, agent.log()
    assert not Path(f"/dev/shm/{name}").exists()


def test_the_source_settings_in_the_configuration_and_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    raw = config_from_args(parser.parse_args([
        "--thing", "cam-1", "--source", "images", "--source-path", "/data/*.jpg",
        "--source-once", "--shm-name", "cams", "--shm-slots", "4"]))
    config = load_config(raw)
    assert (config.source, config.source_path, config.source_loop, config.shm_name,
            config.shm_slots) == ("images", "/data/*.jpg", False, "cams", 4)
    defaults = load_config({"thingName": "cam-1", "source": "shm"})
    assert (defaults.source_path, defaults.source_loop, defaults.shm_name,
            defaults.shm_slots) == (None, True, None, 8)
    with pytest.raises(ConfigError, match=r"shmSlots: Input should be greater than or equal"):
        load_config({"thingName": "cam-1", "shmSlots": 0})
    with pytest.raises(ConfigError, match=r"source: Input should be 'auto'"):
        load_config({"thingName": "cam-1", "source": "webcam"})
