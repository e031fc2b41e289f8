"""An image to a model's input tensor: each step of Preprocess against numpy (and Pillow for
decoding, resizing and the grey conversion), and each bad image or spec with its message."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import Preprocess
from agent.device.inference.preprocess import decode_image, image_to_tensor

Image = pytest.importorskip("PIL.Image")

RNG = np.random.default_rng(11)
PICTURE = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)  # H=6, W=5


def _spec(shape: tuple[int, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name="image", dtype=dtype, shape=shape)  # type: ignore[arg-type]


def test_nchw_with_scale_mean_and_std_per_channel() -> None:
    pre = Preprocess(layout="NCHW", scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    tensor = image_to_tensor(PICTURE, pre, _spec((1, 3, 6, 5)))
    expected = ((PICTURE.astype(np.float32) * np.float32(1 / 255)
                 - np.array([0.485, 0.456, 0.406], np.float32))
                / np.array([0.229, 0.224, 0.225], np.float32)).transpose(2, 0, 1)[None]
    assert tensor.shape == (1, 3, 6, 5) and tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-6)


def test_nhwc_without_batch_and_one_mean_for_every_channel() -> None:
    pre = Preprocess(layout="NHWC", mean=(128.0,), std=(2.0,))
    tensor = image_to_tensor(PICTURE, pre, _spec((6, 5, 3)))
    np.testing.assert_array_equal(tensor, (PICTURE.astype(np.float32) - 128) / 2)


def test_bgr_reverses_the_channels() -> None:
    tensor = image_to_tensor(PICTURE, Preprocess(layout="NHWC", channel_order="BGR"),
                             _spec((1, 6, 5, 3)))
    np.testing.assert_array_equal(tensor[0], PICTURE[:, :, ::-1].astype(np.float32))


def test_gray_is_pillows_luminance() -> None:
    tensor = image_to_tensor(PICTURE, Preprocess(layout="NCHW", channel_order="GRAY"),
                             _spec((1, 1, 6, 5), "uint8"))
    pillow = np.asarray(Image.fromarray(PICTURE).convert("L"))
    np.testing.assert_array_equal(tensor[0, 0], pillow)


def test_resize_is_pillows_bilinear_resize() -> None:
    tensor = image_to_tensor(PICTURE, Preprocess(layout="NHWC"), _spec((1, 3, 4, 3), "uint8"))
    pillow = np.asarray(Image.fromarray(PICTURE).resize((4, 3), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(tensor[0], pillow)


def test_uint8_input_takes_the_raw_pixels() -> None:
    tensor = image_to_tensor(PICTURE, Preprocess(layout="NHWC"), _spec((1, 6, 5, 3), "uint8"))
    assert tensor.dtype == np.uint8 and np.array_equal(tensor[0], PICTURE)


def test_integer_inputs_are_rounded_and_clipped() -> None:
    pre = Preprocess(layout="NHWC", scale=1.5, mean=(100.0,), dtype="int8")
    image = np.array([[[0, 3, 255]]], np.uint8)  # -100, -95.5, 282.5
    tensor = image_to_tensor(image, pre, _spec((1, 1, 3), "int8"))
    assert tensor.dtype == np.int8 and tensor.tolist() == [[[-100, -96, 127]]]


def test_grey_and_rgba_images_are_accepted() -> None:
    grey = PICTURE[:, :, 0]
    as_rgb = image_to_tensor(grey, Preprocess(layout="NHWC"), _spec((6, 5, 3), "uint8"))
    assert np.array_equal(as_rgb, np.repeat(grey[:, :, None], 3, axis=2))
    rgba = np.concatenate([PICTURE, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    dropped = image_to_tensor(rgba, Preprocess(layout="NHWC"), _spec((6, 5, 3), "uint8"))
    assert np.array_equal(dropped, PICTURE)


def test_float_image_is_refused() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE.astype(np.float32), Preprocess(), _spec((1, 3, 6, 5)))
    assert str(err.value) == "an image is uint8 pixels (0-255), got float32"


def test_image_with_two_channels_is_refused() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE[:, :, :2], Preprocess(), _spec((1, 3, 6, 5)))
    assert str(err.value) == ("an image is H x W x 3 (RGB), H x W x 4 (RGBA) or H x W (grey); "
                              "got [6, 5, 2]")


def test_input_that_is_no_image_tensor() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE, Preprocess(), _spec((1, 90)))
    assert str(err.value) == ("input 'image' [1, 90] is not an image tensor ([N,]C,H,W or "
                              "[N,]H,W,C)")


def test_channels_that_do_not_fit_the_input() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE, Preprocess(layout="NCHW", channel_order="GRAY"),
                        _spec((1, 3, 6, 5)))
    assert str(err.value) == ("metadata.preprocess: GRAY in NCHW makes [1, 1, 6, 5], but "
                              "input 'image' is [1, 3, 6, 5]")


def test_mean_of_two_values_for_three_channels() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE, Preprocess(mean=(1.0, 2.0)), _spec((1, 3, 6, 5)))
    assert str(err.value) == "metadata.preprocess.mean: 2 values for 3 channel(s)"


def test_preprocess_dtype_other_than_the_inputs() -> None:
    with pytest.raises(InputSpecError) as err:
        image_to_tensor(PICTURE, Preprocess(dtype="uint8"), _spec((1, 3, 6, 5)))
    assert str(err.value) == ("metadata.preprocess.dtype: uint8, but input 'image' is "
                              "float32")


# ---- decoding ---------------------------------------------------------------------------


def test_decode_png_file_and_bytes(tmp_path: Path) -> None:
    Image.fromarray(PICTURE).save(tmp_path / "p.png")
    decoded = decode_image(tmp_path / "p.png")
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, PICTURE)
    buffer = io.BytesIO()
    Image.fromarray(PICTURE).save(buffer, format="BMP")
    assert np.array_equal(decode_image(buffer.getvalue()), PICTURE)


def test_decode_expands_grey_and_drops_alpha(tmp_path: Path) -> None:
    Image.fromarray(PICTURE[:, :, 1]).save(tmp_path / "grey.png")
    assert np.array_equal(decode_image(tmp_path / "grey.png"),
                          np.repeat(PICTURE[:, :, 1:2], 3, axis=2))
    rgba = np.concatenate([PICTURE, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(decode_image(tmp_path / "rgba.png"), PICTURE)


def test_decode_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        decode_image(tmp_path / "none.png")
    assert str(err.value) == f"{tmp_path / 'none.png'}: no such file"


def test_decode_bytes_that_are_no_image() -> None:
    with pytest.raises(InputSpecError, match=r"upload\.jpg: not an image that can be decoded"):
        decode_image(b"\xff\xd8 truncated", name="upload.jpg")
