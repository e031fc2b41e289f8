"""Frames (``H x W x 3`` RGB ``uint8``) into a model's bound input buffer, in place.

:class:`FramePreprocessor` is built once per source from the model's
:class:`~agent.core.model_metadata.Preprocess` and the input's spec. It holds a float32
scratch of the frame's size and the constants, and :meth:`FramePreprocessor.into` writes the
input tensor straight into the loop's buffer with numpy ``out=`` operations: nothing is
allocated per frame beyond what the decoder itself returns.

It does what :func:`~agent.device.inference.preprocess.image_to_tensor` does for ``predict``,
step for step, so both give the same tensor for the same frame: channels in
``channel_order`` (BGR by writing into the buffer's channels in reverse; GRAY with Pillow's
integer luma), ``pixel * scale``, minus ``mean``, divided by ``std``, laid out as
``layout``, rounded and clipped for integer inputs. Resizing is not done here: a frame must
already have the model's size (:attr:`FramePreprocessor.size`), which the decoder gives it
(PyAV's ``reformat`` for video, Pillow's bilinear ``resize`` for images, the same as
``predict``). A frame is resized whole to the input's height and width, aspect ratio not
kept and nothing cropped, as ``predict`` does: the metadata has no crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata, Preprocess, image_input_name
from agent.device.inference.preprocess import input_size

NO_LABEL = -1
_LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)  # as preprocess.py's


class FramePreprocessor:
    """Turns frames into input ``spec``'s tensor, in place, as ``pre`` describes."""

    def __init__(self, spec: TensorSpec, pre: Preprocess) -> None:
        self.spec = spec
        self.pre = pre
        self.size = input_size(pre, spec)  # (height, width) a frame must have
        height, width = self.size
        channels = pre.channels
        dims = spec.shape[-3:]
        laid_out = (channels, height, width) if pre.layout == "NCHW" else (height, width,
                                                                           channels)
        if tuple(dims) != laid_out or (len(spec.shape) == 4 and spec.shape[0] != 1):
            raise InputSpecError(
                f"metadata.preprocess: {pre.channel_order} in {pre.layout} makes "
                f"{[1, *laid_out] if len(spec.shape) == 4 else list(laid_out)}, but input "
                f"{spec.name!r} is {list(spec.shape)}")
        self.dtype = np.dtype(pre.dtype or spec.dtype)
        if self.dtype != np.dtype(spec.dtype):
            raise InputSpecError(f"metadata.preprocess.dtype: {self.dtype}, but input "
                                 f"{spec.name!r} is {spec.dtype}")
        self._frame_shape = (height, width, 3)
        nchw = pre.layout == "NCHW"
        # The scratch is laid out as the model's input, so each constant applies to one
        # contiguous (NCHW) or strided (NHWC) channel plane: numpy then needs no buffer of
        # its own, which broadcasting a per-channel vector would take.
        self._scratch = np.empty((channels, height, width) if nchw else (height, width,
                                                                         channels), np.float32)
        self._planes = tuple(self._scratch[c] if nchw else self._scratch[:, :, c]
                             for c in range(channels))
        self._nchw = nchw
        self._scale = np.float32(pre.scale)
        # BGR is written into the buffer's channels in reverse, so the constants, given in
        # the model's channel order, are put in the frame's (RGB) order once, here.
        flip = pre.channel_order == "BGR"
        self._mean = _constants(pre.mean, channels, "mean", flip)
        self._std = _constants(pre.std, channels, "std", flip)
        self._luma: tuple[np.ndarray, np.ndarray] | None = None
        if pre.channel_order == "GRAY":
            self._luma = (np.empty((height, width, 3), np.uint32),
                          np.empty((height, width), np.uint32))
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self._bounds: tuple[float, float] | None = (float(info.min), float(info.max))
        else:
            self._bounds = None
        self._buffer: np.ndarray | None = None
        self._target: np.ndarray | None = None

    def _target_for(self, buffer: np.ndarray) -> np.ndarray:
        """A view on ``buffer`` laid out as the scratch, channels in the frame's (RGB)
        order (made once per buffer)."""
        if buffer.shape != tuple(self.spec.shape) or buffer.dtype != self.dtype:
            raise InputSpecError(f"buffer {buffer.dtype}{list(buffer.shape)} is not input "
                                 f"{self.spec.name!r} {self.spec.dtype}{list(self.spec.shape)}")
        target = buffer.reshape(self._scratch.shape)
        if self.pre.channel_order == "BGR":
            target = target[::-1] if self._nchw else target[:, :, ::-1]
        if not np.shares_memory(target, buffer):
            raise InputSpecError("the input buffer cannot be written through a view")
        self._buffer, self._target = buffer, target
        return target

    def into(self, buffer: np.ndarray, frame: np.ndarray) -> None:
        """Write ``frame`` (``H x W x 3`` RGB ``uint8``, of :attr:`size`) into ``buffer``
        (the input's bound buffer) as the model's input tensor."""
        target = self._target if buffer is self._buffer else self._target_for(buffer)
        assert target is not None
        if frame.shape != self._frame_shape or frame.dtype != np.uint8:
            raise InputSpecError(f"a frame for input {self.spec.name!r} is uint8"
                                 f"{list(self._frame_shape)} (RGB), got {frame.dtype}"
                                 f"{list(frame.shape)}")
        scratch = self._scratch
        if self._luma is not None:
            wide, luma = self._luma
            np.copyto(wide, frame)
            np.matmul(wide, _LUMA_WEIGHTS, out=luma)
            np.add(luma, 0x8000, out=luma)
            np.right_shift(luma, 16, out=luma)
            np.copyto(self._planes[0], luma, casting="unsafe")  # 0-255: exact in float32
        else:
            np.copyto(scratch, frame.transpose(2, 0, 1) if self._nchw else frame,
                      casting="unsafe")
        np.multiply(scratch, self._scale, out=scratch)
        if self._mean is not None:
            for plane, value in zip(self._planes, self._mean, strict=True):
                np.subtract(plane, value, out=plane)
        if self._std is not None:
            for plane, value in zip(self._planes, self._std, strict=True):
                np.divide(plane, value, out=plane)
        if self._bounds is not None:
            np.rint(scratch, out=scratch)
            np.clip(scratch, self._bounds[0], self._bounds[1], out=scratch)
        np.copyto(target, scratch, casting="unsafe")


def _constants(values: Sequence[float] | None, channels: int, field: str,
               flip: bool) -> tuple[np.float32, ...] | None:
    """One float32 per channel, in the frame's order (one value applies to every channel)."""
    if values is None:
        return None
    if len(values) not in (1, channels):
        raise InputSpecError(f"metadata.preprocess.{field}: {len(values)} values for "
                             f"{channels} channel(s)")
    numbers = [np.float32(v) for v in (values if len(values) == channels else
                                       list(values) * channels)]
    return tuple(reversed(numbers)) if flip else tuple(numbers)


def image_preprocessor(kind: str, specs: Sequence[TensorSpec],
                       metadata: ModelMetadata | None) -> FramePreprocessor:
    """The pre-processor for source ``kind`` (images, video, camera) on a model of inputs
    ``specs``: a :class:`ConfigError` naming what is missing when the model has no image
    pre-processing metadata, or more inputs than the image."""
    names = [spec.name for spec in specs]
    name = image_input_name(metadata, names)
    if metadata is None or metadata.preprocess is None or name is None:
        raise ConfigError(
            f"source {kind} needs the model's image pre-processing: model.json has no "
            "metadata.preprocess (layout, size, channel_order, scale, mean, std; `edge-agent "
            "models import --layout ... --size ...` writes it)")
    if len(specs) != 1:
        raise ConfigError(f"source {kind} feeds a model whose only input is the image; this "
                          f"one has {len(specs)} inputs ({', '.join(names)}): use source "
                          "shm, whose ring carries every input")
    (spec,) = specs
    if spec.name != name:
        raise ConfigError(f"metadata.preprocess.input {name!r} is not an input of the model "
                          f"(inputs: {', '.join(names)})")
    try:
        return FramePreprocessor(spec, metadata.preprocess)
    except InputSpecError as err:
        raise ConfigError(f"source {kind}: {err}") from err
