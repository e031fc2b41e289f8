"""What a model means to the people and programs using it: labels, pre- and post-processing.

All of it is optional and lives in ``model.json`` under ``metadata`` (see
:mod:`agent.core.model_layout`); a package's signed manifest carries a copy, so a device and
the controller read the same description the packager signed::

    "metadata": {
      "description": "pallet detector, 2024-06 retrain",
      "labels": ["empty", "pallet", "person"],
      "preprocess": {"input": "image", "layout": "NHWC", "size": [96, 96],
                     "channel_order": "RGB", "scale": 0.00392156862745098,
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
      "postprocess": {"output": "scores", "softmax": true, "top_k": 3}
    }

``preprocess`` says how an image becomes the input tensor: resized to ``size`` (height,
width; default the input's own), channels in ``channel_order``, then
``(pixel * scale - mean) / std`` per channel, laid out as ``layout`` and cast to ``dtype``
(default the input's). ``postprocess`` names the output that holds class scores, whether
to apply a softmax to it, and how many of the best classes to report; ``labels`` name
those classes, one per score. :func:`metadata_problem` checks the description against the
model's tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

Layout = Literal["NCHW", "NHWC"]
ChannelOrder = Literal["RGB", "BGR", "GRAY"]
_IMAGE_DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")


class Preprocess(BaseModel):
    """How an image becomes the model's input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input: str | None = Field(default=None, description="the image input (default: the first)")
    layout: Layout = "NCHW"
    size: tuple[int, int] | None = Field(
        default=None, description="(height, width) to resize to; default: the input's own")
    channel_order: ChannelOrder = "RGB"
    scale: float = Field(default=1.0, description="each pixel (0-255) is multiplied by it first")
    mean: tuple[float, ...] | None = Field(default=None, description="per channel, subtracted")
    std: tuple[float, ...] | None = Field(default=None, description="per channel, divided by")
    dtype: str | None = Field(default=None, description="default: the input's dtype")

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError(f"size {list(size)} must be two positive numbers (height, width)")
        return size

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, std: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if std is not None and any(value == 0 for value in std):
            raise ValueError("std values must not be 0")
        return std

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str | None) -> str | None:
        if dtype is not None and dtype not in _IMAGE_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(_IMAGE_DTYPES)}")
        return dtype

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "GRAY" else 3


class Postprocess(BaseModel):
    """Which output holds class scores and how to report them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str | None = Field(default=None, description="the scores output (default: first)")
    softmax: bool = Field(default=False, description="apply a softmax to the scores")
    top_k: int = Field(default=5, ge=1, description="how many of the best classes to report")


class ModelMetadata(BaseModel):
    """The optional description of a model (``model.json``'s ``metadata``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    labels: tuple[str, ...] | None = Field(default=None, min_length=1)
    preprocess: Preprocess | None = None
    postprocess: Postprocess | None = None


class _Tensor(Protocol):
    """The part of a tensor spec the checks read (:class:`~agent.core.model_layout.TensorSpec`)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


def metadata_problem(metadata: ModelMetadata, *, inputs: Sequence[_Tensor],
                     outputs: Sequence[_Tensor]) -> str | None:
    """Why ``metadata`` does not fit tensors ``inputs`` and ``outputs``, as ``field: reason``,
    or None when it fits."""
    ins, outs = list(inputs), list(outputs)
    pre = metadata.preprocess
    if pre is not None:
        problem = _preprocess_problem(pre, ins)
        if problem is not None:
            return problem
    post = metadata.postprocess
    scores = None
    if post is not None:
        scores = _find(outs, post.output)
        if scores is None:
            return (f"metadata.postprocess.output: no output named {post.output!r} "
                    f"(outputs: {', '.join(s.name for s in outs)})")
    if metadata.labels is not None:
        scores = scores or (outs[0] if outs else None)
        if scores is None:
            return "metadata.labels: the model has no output"
        classes = class_count(scores.shape)
        if len(metadata.labels) != classes:
            return (f"metadata.labels: {len(metadata.labels)} labels, but output "
                    f"{scores.name} {list(scores.shape)} holds {classes} scores")
    return None


def class_count(shape: tuple[int, ...]) -> int:
    """Scores per sample of an output of ``shape``: all but a leading batch dimension."""
    per_sample = shape[1:] if len(shape) > 1 else shape
    return math.prod(per_sample)


def image_input_name(metadata: ModelMetadata | None, input_names: list[str]) -> str | None:
    """The input an image goes to, or None when the metadata describes no image input."""
    if metadata is None or metadata.preprocess is None or not input_names:
        return None
    return metadata.preprocess.input or input_names[0]


_T = TypeVar("_T", bound=_Tensor)


def _find(specs: list[_T], name: str | None) -> _T | None:
    if name is None:
        return specs[0] if specs else None
    return next((spec for spec in specs if spec.name == name), None)


def _preprocess_problem(pre: Preprocess, inputs: list[_Tensor]) -> str | None:
    target = _find(inputs, pre.input)
    if target is None:
        return (f"metadata.preprocess.input: no input named {pre.input!r} "
                f"(inputs: {', '.join(s.name for s in inputs)})")
    if len(target.shape) not in (3, 4):
        return (f"metadata.preprocess: input {target.name} {list(target.shape)} is not an "
                "image tensor ([N,]C,H,W or [N,]H,W,C)")
    hwc = target.shape[-3:]
    channels = hwc[0] if pre.layout == "NCHW" else hwc[2]
    height, width = (hwc[1], hwc[2]) if pre.layout == "NCHW" else (hwc[0], hwc[1])
    if channels != pre.channels:
        return (f"metadata.preprocess.layout: {pre.layout} puts {channels} channel(s) in "
                f"input {target.name} {list(target.shape)}, channel_order "
                f"{pre.channel_order} needs {pre.channels}")
    if pre.size is not None and tuple(pre.size) != (height, width):
        return (f"metadata.preprocess.size: {list(pre.size)}, but input {target.name} "
                f"{list(target.shape)} is {height}x{width} in {pre.layout}")
    for field, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and len(values) not in (1, channels):
            return (f"metadata.preprocess.{field}: {len(values)} values for {channels} "
                    "channel(s)")
    return None
