"""The ``images`` source through the real colour model (DLR): the predicted class follows each
file's colour, in name order, once or looped; a corrupt file is skipped and counted; at the
end of a source read once the loop stops filling and still answers API requests; and every
path that names nothing is a typed error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from model_dirs import HOST_ARTIFACT, colour_model_dir
from PIL import Image

from agent.core.errors import ConfigError, SourceError
from agent.core.model_layout import read_model_info
from agent.device.app.inference import InferenceWorker
from agent.device.inference.image_source import ImageSource, list_images
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import SourceOptions, make_source_factory
from agent.device.runtime import DlrBackend
from agent.device.serving.service import InferenceService, ServedModel

COLOURS = {"red": (230, 20, 10), "green": (15, 220, 30), "blue": (5, 25, 240)}
CLASS = {"red": 0, "green": 1, "blue": 2}


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("images") / "colour")


def _solid(path: Path, colour: str, size: tuple[int, int] = (12, 12)) -> Path:
    Image.fromarray(np.full((*size, 3), COLOURS[colour], np.uint8)).save(path)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Six images in three formats and sizes, one of them corrupt, and a file no image."""
    frames = tmp_path / "frames"
    frames.mkdir()
    _solid(frames / "00_red.png", "red")
    _solid(frames / "01_green.bmp", "green", (20, 9))
    _solid(frames / "02_blue.jpg", "blue", (16, 16))
    (frames / "03_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _solid(frames / "04_red.PNG", "red")
    _solid(frames / "05_green.png", "green")
    (frames / "notes.txt").write_text("not an image")
    return frames


def _loop(model: Path, path: str, *, loop: bool,
          requests: RequestQueue | None = None) -> InferenceLoop:
    backend = DlrBackend(artifact_dir=model / "dlr" / HOST_ARTIFACT)
    options = SourceOptions(path=path, loop=loop, metadata=read_model_info(model).metadata)
    return InferenceLoop(backend=backend, requests=requests,
                         make_source=make_source_factory("images", backend, None, 0.0, options))


def _next_class(loop: InferenceLoop) -> tuple[int, int]:
    loop.run(max_inferences=1, duration_s=5)
    return loop.source.frame_id, int(loop.outputs[0].argmax())  # type: ignore[attr-defined]


def test_a_folder_read_once_in_name_order_then_ended(
        colour_model: Path, folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    loop = _loop(colour_model, str(folder), loop=False)
    try:
        source = loop.source
        assert isinstance(source, ImageSource)
        seen = [_next_class(loop) for _ in range(5)]
        assert seen == [(1, CLASS["red"]), (2, CLASS["green"]), (3, CLASS["blue"]),
                        (4, CLASS["red"]), (5, CLASS["green"])]
        assert source.path is not None and source.path.name == "05_green.png"
        assert source.skipped == 1 and source.ended and not source.ready()
        assert abs(source.frame_time - time.time()) < 5
        before = loop.stats.inferences
        loop.run(duration_s=0.1)  # ended: nothing more is filled or run
        assert loop.stats.inferences == before == 5
    finally:
        loop.close()
    warnings = [r.getMessage() for r in caplog.records if " skipped (" in r.getMessage()]
    assert len(warnings) == 1 and "03_broken.png" in warnings[0]
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("source_ended")]
    assert ended == [f"source_ended: images {folder}: end of the list after 5 images (1 "
                     "skipped); the loop stops filling and keeps answering API requests"]


def test_a_glob_looped_starts_over_and_logs_a_bad_file_once(
        colour_model: Path, folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = _loop(colour_model, str(folder / "*_[rg]*"), loop=True)  # 00, 01, 04, 05
    try:
        classes = [_next_class(loop)[1] for _ in range(9)]
        assert classes == [0, 1, 0, 1] * 2 + [0]
        assert not loop.source.ended  # type: ignore[attr-defined]
    finally:
        loop.close()
    loop = _loop(colour_model, str(folder / "0[34]*"), loop=True)  # broken, then red
    try:
        assert [_next_class(loop)[1] for _ in range(3)] == [0, 0, 0]
        assert loop.source.skipped == 3  # type: ignore[attr-defined]
    finally:
        loop.close()
    assert sum("03_broken.png skipped" in r.getMessage() for r in caplog.records) == 1


def test_the_api_still_answers_after_the_source_ended(colour_model: Path, tmp_path: Path) -> None:
    image = _solid(tmp_path / "red.png", "red")
    loop = _loop(colour_model, str(image), loop=False, requests=RequestQueue(4))
    router = VariantRouter(loop=loop, blue_version="colour-v1")
    worker = InferenceWorker(loop=loop)
    service = InferenceService(router=router, queue=loop.requests,  # type: ignore[arg-type]
                               model=ServedModel("colour", "dlr", loop.backend.inputs,
                                                 loop.backend.outputs))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        # The source says it ended when it hands out its last image, just before that
        # image's inference is counted: wait for both.
        while not (loop.source.ended and loop.stats.inferences) \
                and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        time.sleep(0.05)  # no further inference may follow
        assert loop.source.ended and loop.stats.inferences == 1  # type: ignore[attr-defined]
        blue = np.zeros((1, 3, 8, 8), np.float32)
        blue[0, 2] = 1.0
        answer = service.infer({"pixels": blue})
        assert int(answer.outputs[0].argmax()) == CLASS["blue"] and answer.variant == "blue"
        assert worker.is_alive() and loop.source.frame_id == 1  # type: ignore[attr-defined]
    finally:
        worker.stop()
        loop.close()


def test_a_list_that_cannot_be_decoded_at_all_ends(colour_model: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"")
    loop = _loop(colour_model, str(tmp_path), loop=True)
    try:
        loop.run(duration_s=0.2)
        assert loop.stats.inferences == 0 and loop.source.ended  # type: ignore[attr-defined]
        assert loop.source.skipped == 2  # type: ignore[attr-defined]
    finally:
        loop.close()
    assert any("no file of the list could be decoded" in r.getMessage() for r in caplog.records)


def test_paths_that_name_no_image_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"images: .*/nowhere: no such file or folder"):
        list_images(str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match=r"glob '.*\*\.png' matches no image file"):
        list_images(str(tmp_path / "*.png"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"folder .* holds no image file"):
        list_images(str(tmp_path))
    with pytest.raises(SourceError, match=r"source images needs sourcePath"):
        list_images(None)
    assert issubclass(SourceError, ConfigError)
    b, a = _solid(tmp_path / "b.png", "red"), _solid(tmp_path / "a.png", "red")
    assert list_images(str(tmp_path)) == [a, b] == list_images(str(tmp_path / "?.png"))
    assert list_images(str(b)) == [b]


def test_a_model_without_preprocessing_is_refused_before_the_loop(tmp_path: Path) -> None:
    model = colour_model_dir(tmp_path / "bare", metadata={"labels": ["r", "g", "b"]})
    backend = DlrBackend(artifact_dir=model / "dlr" / HOST_ARTIFACT)
    try:
        with pytest.raises(ConfigError, match=r"source images needs the model's image "
                                              r"pre-processing"):
            make_source_factory("images", backend, None, 0.0, SourceOptions(
                path=str(_solid(tmp_path / "red.png", "red")),
                metadata=read_model_info(model).metadata))
    finally:
        backend.close()
