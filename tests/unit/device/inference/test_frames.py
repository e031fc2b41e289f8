"""Frames pre-processed into the bound buffer: the same tensor ``predict`` makes from the same
image, written in place with nothing allocated per frame, and each model that does not fit
refused with what is missing."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata, Preprocess
from agent.device.inference.frames import FramePreprocessor, image_preprocessor
from agent.device.inference.preprocess import image_to_tensor, resize_image

RNG = np.random.default_rng(11)
FRAME = RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)


def _case(order: str, layout: str, dtype: str) -> tuple[TensorSpec, Preprocess]:
    channels = 1 if order == "GRAY" else 3
    shape = (1, channels, 8, 10) if layout == "NCHW" else (1, 8, 10, channels)
    if dtype in ("float32", "float16"):
        mean = (0.4,) if channels == 1 else (0.485, 0.456, 0.406)
        std = (0.2,) if channels == 1 else (0.229, 0.224, 0.225)
        pre = Preprocess(layout=layout, channel_order=order, scale=1 / 255, mean=mean,
                         std=std, dtype=dtype)
    else:  # integer inputs: values rounded and clipped, some of them out of range
        pre = Preprocess(layout=layout, channel_order=order, scale=1.0,
                         mean=(100.0,) * channels, std=(0.5,) * channels)
    return TensorSpec(name="image", dtype=dtype, shape=shape), pre


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "int8"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("order", ["RGB", "BGR", "GRAY"])
def test_the_buffer_holds_what_image_to_tensor_makes(order: str, layout: str,
                                                     dtype: str) -> None:
    spec, pre = _case(order, layout, dtype)
    buffer = np.full(spec.shape, 7, dtype=dtype)
    FramePreprocessor(spec, pre).into(buffer, FRAME)
    expected = image_to_tensor(FRAME, pre, spec)
    assert buffer.dtype == expected.dtype and buffer.shape == expected.shape
    np.testing.assert_array_equal(buffer, expected)  # the same steps: exactly equal


def test_a_frame_of_another_size_is_resized_as_predict_resizes_it() -> None:
    spec = TensorSpec(name="pixels", dtype="float32", shape=(1, 3, 8, 8))
    pre = Preprocess(layout="NCHW", scale=1 / 255)
    photo = RNG.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    frames = FramePreprocessor(spec, pre)
    buffer = np.zeros(spec.shape, np.float32)
    frames.into(buffer, resize_image(photo, frames.size))  # what the images source does
    np.testing.assert_allclose(buffer, image_to_tensor(photo, pre, spec), atol=1e-7)


def test_writes_in_place_and_allocates_nothing_per_frame() -> None:
    """300 frames of 224x224 into a float32 NCHW input with mean and std: the traced peak
    stays under 4 KB, where one temporary array of the frame would take 602 KB and numpy's
    buffering of a broadcast 32 KB."""
    spec = TensorSpec(name="image", dtype="float32", shape=(1, 3, 224, 224))
    pre = Preprocess(layout="NCHW", scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    frames = FramePreprocessor(spec, pre)
    buffer = np.zeros(spec.shape, np.float32)
    address = buffer.ctypes.data
    decoded = [RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    frames.into(buffer, decoded[0])  # the first call makes the buffer's views
    tracemalloc.start()
    try:
        for i in range(300):
            frames.into(buffer, decoded[i % 3])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f"{peak} bytes traced over 300 frames"
    assert buffer.ctypes.data == address
    np.testing.assert_array_equal(buffer, image_to_tensor(decoded[299 % 3], pre, spec))


def test_a_frame_that_does_not_fit_is_refused_and_changes_nothing() -> None:
    spec, pre = _case("RGB", "NCHW", "float32")
    frames = FramePreprocessor(spec, pre)
    buffer = np.zeros(spec.shape, np.float32)
    with pytest.raises(InputSpecError,
                       match=r"is uint8\[8, 10, 3\] \(RGB\), got uint8\[10, 8, 3\]"):
        frames.into(buffer, np.zeros((10, 8, 3), np.uint8))
    with pytest.raises(InputSpecError, match=r"got float32\[8, 10, 3\]"):
        frames.into(buffer, FRAME.astype(np.float32))
    with pytest.raises(InputSpecError, match=r"buffer float32\[1, 3, 10, 8\] is not input"):
        frames.into(np.zeros((1, 3, 10, 8), np.float32), FRAME)
    assert not buffer.any()


def test_preprocess_that_does_not_fit_the_input_is_refused() -> None:
    spec = TensorSpec(name="image", dtype="float32", shape=(1, 3, 8, 8))
    with pytest.raises(InputSpecError, match=r"GRAY in NCHW makes \[1, 1, 8, 8\]"):
        FramePreprocessor(spec, Preprocess(channel_order="GRAY"))
    with pytest.raises(InputSpecError, match=r"mean: 2 values for 3 channel"):
        FramePreprocessor(spec, Preprocess(mean=(0.1, 0.2)))
    with pytest.raises(InputSpecError, match=r"dtype: uint8, but input 'image' is float32"):
        FramePreprocessor(spec, Preprocess(dtype="uint8"))


def test_a_model_without_image_preprocessing_is_a_config_error_naming_it() -> None:
    specs = (TensorSpec(name="pixels", dtype="float32", shape=(1, 3, 8, 8)),)
    for metadata in (None, ModelMetadata(labels=("a", "b", "c"))):
        with pytest.raises(ConfigError, match=r"source video needs the model's image "
                                              r"pre-processing: model\.json has no "
                                              r"metadata\.preprocess"):
            image_preprocessor("video", specs, metadata)
    two = (*specs, TensorSpec(name="counts", dtype="int32", shape=(1, 3)))
    with pytest.raises(ConfigError, match=r"only input is the image; this one has 2 inputs "
                                          r"\(pixels, counts\): use source shm"):
        image_preprocessor("images", two, ModelMetadata(preprocess=Preprocess()))
    with pytest.raises(ConfigError, match=r"source camera: .*GRAY in NCHW"):
        image_preprocessor("camera", specs,
                           ModelMetadata(preprocess=Preprocess(channel_order="GRAY")))
    made = image_preprocessor("images", specs, ModelMetadata(preprocess=Preprocess()))
    assert made.size == (8, 8)
