"""The ``video`` and ``camera`` sources: a video generated here with PyAV (30 frames of solid
red, green and blue, MPEG-4 Part 2) decoded by PyAV into the real colour model (DLR) through
the inference loop; the predicted class follows the frame colour. A file read once ends the
source (logged, the loop then idles); looped, it starts over; every bad input is a typed
error before the loop runs."""

from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
from agent_process import AgentProcess
from model_dirs import HOST_ARTIFACT, colour_model_dir
from waits import wait_for

from agent.cli.main import main
from agent.core.errors import ConfigError, SourceError
from agent.core.model_layout import read_model_info
from agent.device.inference import video_source
from agent.device.inference.frames import image_preprocessor
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import SourceOptions, make_source_factory
from agent.device.inference.video_source import VideoInput, VideoSource, video_input
from agent.device.runtime import DlrBackend

COLOURS = ((235, 16, 16), (16, 235, 16), (16, 16, 235))  # red, green, blue
FRAMES = 30


def _frame_class(index: int) -> int:
    return (index // 10) % 3  # frames 0-9 red, 10-19 green, 20-29 blue


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The colour model and the video: 30 frames, 32x32, 30 fps, ten of each colour."""
    root = tmp_path_factory.mktemp("video")
    video = root / "colours.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(FRAMES):
            pixels = np.empty((32, 32, 3), np.uint8)
            pixels[:] = COLOURS[_frame_class(i)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return colour_model_dir(root / "colour"), video


def _loop(model: Path, kind: str, path: str, *, loop: bool) -> InferenceLoop:
    backend = DlrBackend(artifact_dir=model / "dlr" / HOST_ARTIFACT)
    options = SourceOptions(path=path, loop=loop, metadata=read_model_info(model).metadata)
    try:
        return InferenceLoop(backend=backend, make_source=make_source_factory(
            kind, backend, None, 0.0, options))
    except BaseException:
        backend.close()
        raise


def _classes(loop: InferenceLoop, count: int) -> list[tuple[int, int]]:
    seen = []
    for _ in range(count):
        loop.run(max_inferences=1, duration_s=10)
        seen.append((loop.source.frame_id,  # type: ignore[attr-defined]
                     int(loop.outputs[0].argmax())))
    return seen


def test_a_video_file_read_once_follows_the_colours_then_ends(
        media: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    model, video = media
    loop = _loop(model, "video", str(video), loop=False)
    try:
        source = loop.source
        assert isinstance(source, VideoSource)
        seen = _classes(loop, FRAMES)
        assert seen == [(i + 1, _frame_class(i)) for i in range(FRAMES)]
        loop.run(duration_s=0.3)  # the end: nothing more is filled or run
        assert loop.stats.inferences == FRAMES and source.ended and not source.ready()
        assert (source.decoded, source.skipped, source.dropped) == (FRAMES, 0, 0)
        assert source.frame_time > 0
    finally:
        loop.close()
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("source_ended")]
    assert ended == [f"source_ended: video {video}: end of file after 30 frames (0 skipped); "
                     "the loop stops filling and keeps answering API requests"]


def test_a_looped_video_starts_over(media: tuple[Path, Path]) -> None:
    model, video = media
    loop = _loop(model, "video", str(video), loop=True)
    try:
        seen = _classes(loop, FRAMES + 15)
        assert [c for _, c in seen] == [_frame_class(i % FRAMES) for i in range(FRAMES + 15)]
        assert [f for f, _ in seen] == list(range(1, FRAMES + 16))  # frame ids keep counting
        assert loop.source.reopened >= 1 and not loop.source.ended  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_the_camera_code_path_on_a_video_file(media: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No camera here: a V4L2 device differs only in what ``av.open`` is given
    (``format="v4l2"``, checked below); the live handling a camera gets (newest frames kept,
    the rest dropped and counted, opened again when it ends) runs on the video file."""
    model, video = media
    monkeypatch.setattr(video_source, "RETRY_S", (0.05, 0.1))
    backend = DlrBackend(artifact_dir=model / "dlr" / HOST_ARTIFACT)
    frames = image_preprocessor("camera", backend.inputs, read_model_info(model).metadata)
    live = VideoInput("camera", str(video), live=True)
    loop = InferenceLoop(backend=backend, rate_hz=200.0, make_source=lambda b: VideoSource(
        buffer=b[0], preprocessor=frames, source=live, depth=2))
    try:
        loop.run(max_inferences=60, duration_s=20)
        source = loop.source
        assert loop.stats.inferences == 60 and source.name == "camera"
        assert source.dropped > 0 and source.reopened >= 1  # type: ignore[attr-defined]
        pixels = loop.inputs[0].reshape(3, 64).mean(axis=1)
        assert int(loop.outputs[0].argmax()) == int(pixels.argmax())  # the frame's colour
    finally:
        loop.close()
    device = video.parent / "video9"
    device.write_bytes(b"")
    assert video_input("camera", str(device)) == VideoInput("camera", str(device), "v4l2",
                                                            live=True)
    if not Path("/dev/video7").exists():
        with pytest.raises(SourceError, match=r"source camera: no device /dev/video7 "):
            video_input("camera", "7")


def test_bad_video_inputs_are_typed_errors_before_the_loop(
        media: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = media
    with pytest.raises(SourceError, match=r"source video: .*/missing\.mp4: no such file"):
        _loop(model, "video", str(tmp_path / "missing.mp4"), loop=False)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video at all" * 64)
    with pytest.raises(SourceError, match=r"garbage\.mp4: cannot be opened as video"):
        _loop(model, "video", str(garbage), loop=False)
    with pytest.raises(SourceError, match=r"rtsp://127\.0\.0\.1:9/cam: cannot be opened"):
        _loop(model, "video", "rtsp://127.0.0.1:9/cam", loop=False)
    with pytest.raises(SourceError, match=r"source video needs sourcePath"):
        video_input("video", None)
    bare = colour_model_dir(tmp_path / "bare", metadata={"labels": ["r", "g", "b"]})
    with pytest.raises(ConfigError, match=r"source video needs the model's image "
                                          r"pre-processing: model\.json has no"):
        _loop(bare, "video", str(garbage), loop=False)


def test_edge_agent_run_on_a_video_read_once(media: tuple[Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model, video = media
    code = main(["run", "--model", str(model), "--source", "video", "--source-path",
                 str(video), "--source-once", "--duration", "60", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert (summary["source"], summary["inferences"], summary["errors"]) == ("video", 30, 0)
    assert summary["elapsed_s"] < 30  # it ended with the video, not the duration


def test_the_real_agent_keeps_answering_after_its_video_ended(media: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    """``edge-agent serve --source video --source-once``: the video runs through, the end is
    logged, and the agent goes on answering the local inference API."""
    model, video = media
    state = tmp_path / "state"
    agent = AgentProcess(thing="video-cam", model=model, state_dir=state, broker_port=None,
                         log_path=tmp_path / "agent.log", rate=0, extra=[
                             "--source", "video", "--source-path", str(video),
                             "--source-once"]).start()
    try:
        endpoints = wait_for(lambda: _endpoints(state), timeout_s=60)
        wait_for(lambda: "source_ended: video" in agent.log(), timeout_s=30)
        assert f"source_ended: video {video}: end of file after 30 frames" in agent.log()
        host, port = endpoints["http"].removeprefix("http://").rsplit(":", 1)
        blue = np.zeros((1, 3, 8, 8), np.float32)
        blue[0, 2] = 1.0
        body = {"inputs": [{"name": "pixels", "shape": [1, 3, 8, 8], "datatype": "FP32",
                            "data": blue.ravel().tolist()}]}
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", "/v2/models/colour/infer", json.dumps(body),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        assert response.status == 200, answer
        assert int(np.argmax(answer["outputs"][0]["data"])) == 2
        assert agent.process is not None and agent.process.poll() is None
    finally:
        assert agent.stop() == 0, agent.log()


def _endpoints(state: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads((state / "endpoints.json").read_text()))
    except (FileNotFoundError, ValueError):
        return None
