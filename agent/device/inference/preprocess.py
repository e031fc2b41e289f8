"""From an image to a model's input tensor, as the model's metadata describes it.

:func:`decode_image` reads a PNG, JPEG, BMP (anything Pillow reads) into an ``H x W x 3``
RGB ``uint8`` array; :func:`image_to_tensor` turns such an array into the tensor of one
input, following :class:`~agent.core.model_metadata.Preprocess`:

1. resize to the input's height and width (Pillow's bilinear filter; skipped when the
   image already has that size);
2. channels in ``channel_order``: RGB as decoded, BGR reversed, GRAY as Pillow's ``L``
   conversion computes luminance (ITU-R 601-2, the same integer rounding);
3. ``pixel * scale``, minus ``mean``, divided by ``std`` (per channel; one value applies to
   every channel);
4. laid out as ``layout`` (NCHW or NHWC), with the leading batch dimension when the input
   has four dimensions;
5. cast to ``dtype`` (default the input's own): integer inputs get the values rounded and
   clipped to the type's range, so a ``uint8`` model with ``scale`` 1 takes the raw pixels.

Everything after decoding and resizing is numpy, so the steps give the same tensor on
every device. Pillow is the optional ``images`` extra, imported only when an image is
decoded or resized: ``import agent`` and models fed arrays never need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import Preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Pillow's "L" conversion: L = R * 299/1000 + G * 587/1000 + B * 114/1000, in 16-bit fixed point.
_LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)


def decode_image(source: Path | bytes, *, name: str | None = None) -> np.ndarray:
    """The image in ``source`` (a file, or its bytes) as ``H x W x 3`` RGB ``uint8``.

    Grey and palette images are expanded to RGB; an alpha channel is dropped. ``name``
    names the image in errors (default: the path). Raises :class:`InputSpecError` for
    data Pillow cannot read, :class:`ConfigError` for a file that does not exist, and
    ``ModuleNotFoundError`` (``PIL``) when Pillow is not installed.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    where = name or (str(source) if isinstance(source, Path) else "image")
    try:
        handle = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
        with handle as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ConfigError(f"{where}: no such file") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputSpecError(f"{where}: not an image that can be decoded: {err}") from err
    return np.ascontiguousarray(rgb)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (``H x W x C`` ``uint8``) resized to ``size`` (height, width) with Pillow's
    bilinear filter; the same array when it already has that size."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def input_size(pre: Preprocess, spec: TensorSpec) -> tuple[int, int]:
    """The (height, width) an image must have for input ``spec`` laid out as ``pre.layout``."""
    if len(spec.shape) not in (3, 4):
        raise InputSpecError(f"input {spec.name!r} {list(spec.shape)} is not an image tensor "
                             "([N,]C,H,W or [N,]H,W,C)")
    dims = spec.shape[-3:]
    return (dims[1], dims[2]) if pre.layout == "NCHW" else (dims[0], dims[1])


def image_to_tensor(image: np.ndarray, pre: Preprocess, spec: TensorSpec) -> np.ndarray:
    """The tensor for input ``spec`` from ``image``, an ``H x W x 3`` RGB ``uint8`` array
    (``H x W`` or ``H x W x 1`` grey, and ``H x W x 4`` RGBA, are accepted too).

    The result has exactly ``spec``'s shape and dtype, C-contiguous, ready to bind.
    Raises :class:`InputSpecError` when the image or ``pre`` does not fit ``spec``.
    """
    rgb = _as_rgb(image)
    height, width = input_size(pre, spec)
    rgb = resize_image(rgb, (height, width))
    pixels = _ordered(rgb, pre)
    values = pixels.astype(np.float32) * np.float32(pre.scale)
    channels = pixels.shape[2]
    for field, numbers in (("mean", pre.mean), ("std", pre.std)):
        if numbers is not None and len(numbers) not in (1, channels):
            raise InputSpecError(f"metadata.preprocess.{field}: {len(numbers)} values for "
                                 f"{channels} channel(s)")
    if pre.mean is not None:
        values -= np.asarray(pre.mean, dtype=np.float32)
    if pre.std is not None:
        values /= np.asarray(pre.std, dtype=np.float32)
    laid_out = values.transpose(2, 0, 1) if pre.layout == "NCHW" else values
    if len(spec.shape) == 4:
        laid_out = laid_out[np.newaxis]
    if tuple(laid_out.shape) != tuple(spec.shape):
        raise InputSpecError(
            f"metadata.preprocess: {pre.channel_order} in {pre.layout} makes "
            f"{list(laid_out.shape)}, but input {spec.name!r} is {list(spec.shape)}")
    return np.ascontiguousarray(_cast(laid_out, pre, spec))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InputSpecError(f"an image is uint8 pixels (0-255), got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise InputSpecError(f"an image is H x W x 3 (RGB), H x W x 4 (RGBA) or H x W "
                             f"(grey); got {list(array.shape)}")
    if array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    return np.ascontiguousarray(array[:, :, :3])


def _ordered(rgb: np.ndarray, pre: Preprocess) -> np.ndarray:
    if pre.channel_order == "RGB":
        return rgb
    if pre.channel_order == "BGR":
        return rgb[:, :, ::-1]
    luma = (rgb.astype(np.uint32) @ _LUMA_WEIGHTS + 0x8000) >> 16
    return luma.astype(np.uint8)[:, :, np.newaxis]


def _cast(values: np.ndarray, pre: Preprocess, spec: TensorSpec) -> np.ndarray:
    dtype = np.dtype(pre.dtype or spec.dtype)
    if dtype != np.dtype(spec.dtype):
        raise InputSpecError(f"metadata.preprocess.dtype: {dtype}, but input {spec.name!r} "
                             f"is {spec.dtype}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        clipped: np.ndarray = np.clip(np.rint(values), info.min, info.max)
        return clipped.astype(dtype)
    return values.astype(dtype)
