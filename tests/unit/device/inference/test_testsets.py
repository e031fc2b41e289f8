"""Test sets of any model (``x`` or one array per input, labels optional) and the source
choice: ``auto`` replays a test set when there is one and feeds random inputs otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import (
    ArtifactCorruptError,
    ArtifactMissingError,
    ConfigError,
    InputSpecError,
)
from agent.core.model_layout import TensorSpec
from agent.device.inference.sources import (
    NO_LABEL,
    MultiReplaySource,
    choose_source,
    load_testset,
    read_testset,
)

FRAME = TensorSpec(name="sensor_frame", dtype="float32", shape=(1, 6))
COUNTS = TensorSpec(name="event_counts", dtype="int32", shape=(1, 3))


def _fusion_set(path: Path, *, labels: bool, n: int = 5) -> Path:
    arrays = {"sensor_frame": np.arange(6 * n, dtype=np.float64).reshape(n, 6),
              "event_counts": np.arange(3 * n, dtype=np.int64).reshape(n, 1, 3)}
    if labels:
        arrays["y"] = np.arange(n) % 4
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_multi_input_set_with_labels(tmp_path: Path) -> None:
    data = read_testset(_fusion_set(tmp_path / "t.npz", labels=True), (FRAME, COUNTS))
    frames, counts = data.inputs
    assert frames.shape == (5, 1, 6) and frames.dtype == np.float32
    assert counts.shape == (5, 1, 3) and counts.dtype == np.int32
    assert data.labelled and data.labels.tolist() == [0, 1, 2, 3, 0] and len(data) == 5


def test_multi_input_set_without_labels(tmp_path: Path) -> None:
    data = read_testset(_fusion_set(tmp_path / "t.npz", labels=False), (FRAME, COUNTS))
    assert not data.labelled and data.labels.tolist() == [NO_LABEL] * 5


def test_single_input_set_as_x(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.ones((3, 6), np.float32))
    data = read_testset(tmp_path / "t.npz", (FRAME,))
    assert data.inputs[0].shape == (3, 1, 6) and not data.labelled
    x, y = load_testset(tmp_path / "t.npz")  # the single-input reader: no labels is -1
    assert x.shape == (3, 6) and y.tolist() == [NO_LABEL] * 3


def test_set_with_an_array_for_no_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.ones((3, 6)), event_counts=np.ones((3, 3)))
    with pytest.raises(ArtifactCorruptError) as err:
        read_testset(tmp_path / "t.npz", (FRAME, COUNTS))
    assert str(err.value) == (f"{tmp_path / 't.npz'}: arrays ['event_counts', 'x']; a test "
                              "set holds 'sensor_frame', 'event_counts' and optionally "
                              "labels 'y'")


def test_set_whose_inputs_have_different_counts(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", sensor_frame=np.ones((3, 6)), event_counts=np.ones((2, 3)))
    with pytest.raises(ArtifactCorruptError, match="2 samples of 'event_counts' but 3 of "
                                                   "'sensor_frame'"):
        read_testset(tmp_path / "t.npz", (FRAME, COUNTS))


def test_set_with_float_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.ones((3, 6)), y=np.ones(3))
    with pytest.raises(ArtifactCorruptError, match=r"labels 'y' are float64 \[3\]; they are "
                                                   r"integers \[3\], one per sample"):
        read_testset(tmp_path / "t.npz", (FRAME,))


def test_set_with_values_its_input_cannot_hold(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", sensor_frame=np.ones((2, 6)),
             event_counts=np.full((2, 3), 0.5))
    with pytest.raises(InputSpecError, match=r"input 'event_counts' \(int32 \[1, 3\]\): "
                                             r"value 0\.5 is not an integer"):
        read_testset(tmp_path / "t.npz", (FRAME, COUNTS))


def test_missing_set(tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissingError, match=r"t\.npz: no test set"):
        read_testset(tmp_path / "t.npz", (FRAME,))


def test_multi_replay_fills_every_input_and_wraps(tmp_path: Path) -> None:
    data = read_testset(_fusion_set(tmp_path / "t.npz", labels=True, n=2), (FRAME, COUNTS))
    buffers = (np.zeros((1, 6), np.float32), np.zeros((1, 3), np.int32))
    source = MultiReplaySource(buffers=buffers, testset=data)
    assert source.fill() == 0 and buffers[1].tolist() == [[0, 1, 2]]
    assert source.fill() == 1 and buffers[0][0, 0] == 6.0 and buffers[1].tolist() == [[3, 4, 5]]
    assert source.fill() == 0 and buffers[1].tolist() == [[0, 1, 2]]
    source.close()


def test_auto_replays_a_test_set_when_there_is_one(tmp_path: Path) -> None:
    assert choose_source("auto", tmp_path / "testset.npz") == ("testset", None)


def test_auto_without_a_test_set_is_random_with_a_note() -> None:
    kind, note = choose_source("auto", None)
    assert kind == "random"
    assert note == ("the model has no test set (testset.npz): running on random inputs drawn "
                    "from its input specs")


def test_digits_is_the_older_name_of_testset() -> None:
    assert choose_source("digits", None) == ("testset", None)
    assert choose_source("shm", None) == ("shm", None)


def test_unknown_source() -> None:
    with pytest.raises(ConfigError, match=r"unknown source 'webcam' \(choose auto, testset"):
        choose_source("webcam", None)


def test_the_agents_default_source_is_auto_and_falls_back_to_random(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from model_dirs import HOST_TARGET, fusion_model_dir

    from agent.device.app.config import AgentConfig
    from agent.device.inference.runner import InferenceLoop
    from agent.device.inference.sources import RandomSource, make_source_factory
    from agent.device.platform.elf import host_arch
    from agent.device.runtime import DlrConfig, load_backend

    assert AgentConfig(thing_name="t").source == "auto"
    model = fusion_model_dir(tmp_path / "fusion")
    backend = load_backend(model / "dlr" / f"{HOST_TARGET}-{host_arch()}", DlrConfig())
    with caplog.at_level("INFO", logger="edge_agent.sources"):
        loop = InferenceLoop(backend=backend,
                             make_source=make_source_factory("auto", backend, None, 0.0))
    try:
        assert isinstance(loop.source, RandomSource)
        assert loop.run(max_inferences=10).inferences == 10
    finally:
        loop.close()
    assert "the model has no test set (testset.npz)" in caplog.text


def test_source_path_names_the_set_a_testset_source_replays(tmp_path: Path) -> None:
    from model_dirs import HOST_TARGET, fusion_model_dir

    from agent.device.inference.sources import SourceOptions, make_source_factory
    from agent.device.platform.elf import host_arch
    from agent.device.runtime import DlrConfig, load_backend

    model = fusion_model_dir(tmp_path / "fusion")
    backend = load_backend(model / "dlr" / f"{HOST_TARGET}-{host_arch()}", DlrConfig())
    field = _fusion_set(tmp_path / "field.npz", labels=True, n=3)
    buffers = (np.zeros((1, 6), np.float32), np.zeros((1, 3), np.int32))
    factory = make_source_factory("testset", backend, model / "testset.npz", 0.0,
                                  SourceOptions(path=str(field)))
    source = factory(buffers)
    assert [source.fill() for _ in range(4)] == [0, 1, 2, 0]  # the field set's labels, looped
    assert buffers[1].tolist() == [[0, 1, 2]]
    source.close()
    # also for a model without a test set of its own
    assert make_source_factory("testset", backend, None, 0.0, SourceOptions(path=str(field)))
    with pytest.raises(ConfigError, match=r"sourcePath .*nothing.npz is not a file"):
        make_source_factory("testset", backend, None, 0.0,
                            SourceOptions(path=str(tmp_path / "nothing.npz")))
