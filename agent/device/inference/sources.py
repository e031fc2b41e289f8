"""Input sources: each writes the next sample into the loop's input buffers in place.

``fill()`` returns the sample's label, or -1 when the source has none. Sources
prepare whatever per-sample objects they need up front, so filling costs one
buffer copy and allocates nothing. :func:`make_source_factory` picks one by name
(``digits``, ``random``, ``shm``) for the loop to build on its buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.core.errors import (
    ArtifactCorruptError,
    ArtifactMissingError,
    ConfigError,
    InputSpecError,
)
from agent.core.model_layout import TensorSpec
from agent.device.inference.shm import ShmSource

if TYPE_CHECKING:
    from agent.device.runtime.base import Backend

NO_LABEL = -1


class Source(Protocol):
    name: str

    def fill(self) -> int:
        """Write the next sample into the bound buffers; return its label or -1."""
        ...

    def close(self) -> None: ...


def load_testset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (float32 samples) and ``y`` (int64 labels) from a model's ``testset.npz``."""
    try:
        with np.load(path) as data:
            x, y = np.ascontiguousarray(data["x"]), np.ascontiguousarray(data["y"])
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no labelled test set") from err
    except (KeyError, ValueError, OSError) as err:
        raise ArtifactCorruptError(f"{path}: {err}") from err
    if len(x) != len(y) or len(x) == 0:
        raise ArtifactCorruptError(f"{path}: {len(x)} samples but {len(y)} labels")
    return x, y


class ReplaySource:
    """Replays a labelled dataset (e.g. the digits test split) in order, forever."""

    name = "digits"

    def __init__(self, *, buffer: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        sample_shape = buffer.shape[1:] if buffer.shape[:1] == (1,) else buffer.shape
        if x.shape[1:] != sample_shape or x.dtype != buffer.dtype:
            raise InputSpecError(
                f"dataset samples are {x.dtype}{list(x.shape[1:])}, the model input is "
                f"{buffer.dtype}{list(buffer.shape)}"
            )
        self._buffer = buffer
        # One view per sample, shaped like the buffer, made once.
        self._rows = [x[i:i + 1].reshape(buffer.shape) for i in range(len(x))]
        self._labels = [int(label) for label in y]
        self._last = len(self._rows) - 1
        self._index = 0

    def fill(self) -> int:
        i = self._index
        self._buffer[...] = self._rows[i]
        self._index = i + 1 if i < self._last else 0
        return self._labels[i]

    def close(self) -> None:
        self._rows = []


class RandomSource:
    """Random inputs for any model, drawn from its input specs (a fixed, seeded pool)."""

    name = "random"

    def __init__(self, *, buffers: Sequence[np.ndarray], specs: Sequence[TensorSpec],
                 pool: int = 64, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._buffers = tuple(buffers)
        self._pool = [tuple(_random_like(rng, spec) for spec in specs) for _ in range(pool)]
        self._index = 0

    def fill(self) -> int:
        sample = self._pool[self._index]
        self._index = (self._index + 1) % len(self._pool)
        for buffer, value in zip(self._buffers, sample, strict=True):
            buffer[...] = value
        return NO_LABEL

    def close(self) -> None:
        self._pool = []


def _random_like(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.random(spec.shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=spec.shape, dtype=dtype, endpoint=True)


def make_source_factory(
    kind: str, backend: Backend, testset: Path | None, rate_hz: float
) -> Callable[[tuple[np.ndarray, ...]], Source]:
    """A factory the loop calls with its freshly allocated input buffers."""

    def factory(buffers: tuple[np.ndarray, ...]) -> Source:
        if kind == "random":
            return RandomSource(buffers=buffers, specs=backend.inputs)
        if len(buffers) != 1:
            raise ConfigError(f"--source {kind} feeds single-input models; use --source random")
        if kind == "digits":
            if testset is None:
                raise ConfigError("this model has no labelled test set; use --source random")
            x, y = load_testset(testset)
            return ReplaySource(buffer=buffers[0], x=x, y=y)
        if kind == "shm":
            return ShmSource.spawn(buffer=buffers[0], testset=testset, rate_hz=rate_hz)
        raise ConfigError(f"unknown source {kind!r}")

    return factory
