"""Input sources: each writes the next sample into the loop's input buffers in place.

``fill()`` returns the sample's label, or -1 when the source has none. Sources
prepare whatever per-sample objects they need up front, so filling costs one
buffer copy per input and allocates nothing. :func:`make_source_factory` picks one by
name for the loop to build on its buffers:

- ``testset`` (``digits`` is its older name): replay the model's ``testset.npz`` in
  order, forever (:func:`read_testset`: ``x`` or one array per input name, labels ``y``
  optional, so accuracy is counted only where labels exist); ``sourcePath`` names
  another ``.npz`` of the same form to replay instead (a recorded or labelled field
  stream), whatever model serves;
- ``random``: inputs drawn from the input specs, for any model;
- ``images``: image files of a folder or glob (:mod:`~agent.device.inference.image_source`);
- ``video``: a video file or stream URL, and ``camera``: a V4L2 device
  (:mod:`~agent.device.inference.video_source`), both pre-processed from the model's
  metadata into the bound buffer (:mod:`~agent.device.inference.frames`);
- ``shm``: a producer process writing samples into a shared-memory ring: the one named
  in :class:`SourceOptions` (``shmName``), for an external producer (:mod:`agent.producer`),
  else a fresh one fed by the built-in demo producer (``edge-agent run --source shm``);
- ``api``: no loop at all: the model answers only application requests
  (:class:`ApiSource`);
- ``auto``: the test set when the model has one, else random inputs
  (:func:`choose_source` says which, and why).

``images``, ``video``, ``camera`` and the named ``shm`` ring have a ``ready()`` method: the
loop asks it before each fill and, while no sample is waiting (or once a source that is not
looped has ended: its ``ended`` is then true), answers API requests instead of filling.
Every source of outside frames also keeps ``frame_id`` (increasing by one per frame) and
``frame_time`` (wall-clock seconds) of the sample its last ``fill()`` wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from agent.core.errors import (
    ArtifactCorruptError,
    ArtifactMissingError,
    ConfigError,
    InputSpecError,
)
from agent.core.model_layout import TESTSET, TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.device.inference.frames import image_preprocessor
from agent.device.inference.image_source import ImageSource, list_images
from agent.device.inference.inputs import SINGLE_INPUT_KEY, fit_samples
from agent.device.inference.shm import ShmSource
from agent.device.inference.video_source import VideoSource, video_input

if TYPE_CHECKING:
    from agent.device.runtime.base import Backend

SourceKind = Literal["auto", "testset", "digits", "random", "shm", "api", "images", "video",
                     "camera"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("auto", "testset", "digits", "random", "shm", "api",
                                        "images", "video", "camera")
FRAME_KINDS = ("images", "video", "camera")  # pre-processed from the model's metadata
LABELS_KEY = "y"
NO_TESTSET_HINT = "use --source random"
log = logging.getLogger("edge_agent.sources")

NO_LABEL = -1


class Source(Protocol):
    name: str

    def fill(self) -> int:
        """Write the next sample into the bound buffers; return its label or -1."""
        ...

    def close(self) -> None: ...


def load_testset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (the samples of a single-input model) and ``y`` (int64 labels, -1 for each
    sample when the set has none) from a model's ``testset.npz``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            x = np.ascontiguousarray(data[SINGLE_INPUT_KEY])
            y = (np.ascontiguousarray(data[LABELS_KEY]) if LABELS_KEY in data.files
                 else np.full(len(x), NO_LABEL, dtype=np.int64))
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no test set") from err
    except (KeyError, ValueError, OSError) as err:
        raise ArtifactCorruptError(f"{path}: {err}") from err
    if len(x) != len(y) or len(x) == 0:
        raise ArtifactCorruptError(f"{path}: {len(x)} samples but {len(y)} labels")
    return x, y


@dataclass(frozen=True)
class EvaluationSet:
    """A model's evaluation set, fitted to its inputs."""

    path: Path
    inputs: tuple[np.ndarray, ...]  # one [N, *spec.shape] array per input, in spec order
    labels: np.ndarray  # int64 [N]; NO_LABEL throughout when the set has none
    labelled: bool

    def __len__(self) -> int:
        return len(self.labels)


def read_testset(path: Path, specs: Sequence[TensorSpec]) -> EvaluationSet:
    """``testset.npz`` for a model of inputs ``specs``: ``x`` (or the input's name) for a
    single-input model, else one array per input name, each ``[N, ...]`` and of any dtype
    its input holds without change; ``y``, integer labels ``[N]``, optional."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no test set") from err
    except (ValueError, OSError, EOFError) as err:
        raise ArtifactCorruptError(f"{path}: not a readable .npz: {err}") from err
    names = [spec.name for spec in specs]
    if len(specs) == 1 and SINGLE_INPUT_KEY in arrays and names[0] not in arrays:
        arrays[names[0]] = arrays.pop(SINGLE_INPUT_KEY)
    labels = arrays.pop(LABELS_KEY, None)
    unknown = sorted(set(arrays) - set(names))
    missing = [name for name in names if name not in arrays]
    if unknown or missing:
        wanted = (f"'{SINGLE_INPUT_KEY}' or " if len(names) == 1 else "") + ", ".join(
            map(repr, names))
        raise ArtifactCorruptError(f"{path}: arrays {sorted(arrays)}; a test set holds "
                                   f"{wanted} and optionally labels '{LABELS_KEY}'")
    inputs = tuple(fit_samples(arrays[spec.name], spec, where=str(path)) for spec in specs)
    count = len(inputs[0])
    for spec, array in zip(specs, inputs, strict=True):
        if len(array) != count:
            raise ArtifactCorruptError(f"{path}: {len(array)} samples of {spec.name!r} but "
                                       f"{count} of {specs[0].name!r}")
    if labels is None:
        return EvaluationSet(path=path, inputs=inputs, labelled=False,
                       labels=np.full(count, NO_LABEL, dtype=np.int64))
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != count:
        raise ArtifactCorruptError(f"{path}: labels '{LABELS_KEY}' are {labels.dtype} "
                                   f"{list(labels.shape)}; they are integers [{count}], one "
                                   "per sample")
    return EvaluationSet(path=path, inputs=inputs, labelled=True, labels=labels.astype(np.int64))


class ReplaySource:
    """Replays a single-input dataset (e.g. the digits test split) in order, forever; a
    label of -1 marks a sample without one."""

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


class ApiSource:
    """No samples of its own: the loop only answers requests of the local inference API."""

    name = "api"
    idle = True

    def fill(self) -> int:
        return NO_LABEL

    def close(self) -> None:
        pass


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


class MultiReplaySource:
    """Replays a test set of a multi-input model in order, forever (every input at once)."""

    name = "testset"

    def __init__(self, *, buffers: Sequence[np.ndarray], testset: EvaluationSet) -> None:
        if len(buffers) != len(testset.inputs):
            raise InputSpecError(f"{testset.path}: {len(testset.inputs)} inputs for a model "
                                 f"of {len(buffers)}")
        for buffer, samples in zip(buffers, testset.inputs, strict=True):
            if samples.shape[1:] != buffer.shape or samples.dtype != buffer.dtype:
                raise InputSpecError(
                    f"{testset.path}: samples are {samples.dtype}{list(samples.shape[1:])}, "
                    f"the model input is {buffer.dtype}{list(buffer.shape)}")
        # One (buffer, view) pair per input and sample, made once.
        self._samples = [tuple(zip(buffers, (samples[i] for samples in testset.inputs),
                                   strict=True)) for i in range(len(testset))]
        self._labels = [int(label) for label in testset.labels]
        self._last = len(self._samples) - 1
        self._index = 0

    def fill(self) -> int:
        i = self._index
        for buffer, row in self._samples[i]:
            buffer[...] = row
        self._index = i + 1 if i < self._last else 0
        return self._labels[i]

    def close(self) -> None:
        self._samples = []


def choose_source(kind: str, testset: Path | None) -> tuple[str, str | None]:
    """The source ``kind`` means for a model whose test set is ``testset`` (None: it has
    none), and a note to show when the choice was made for the user: ``auto`` is
    ``testset`` when there is one, else ``random``; ``digits`` is ``testset``."""
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source {kind!r} (choose {', '.join(SOURCE_KINDS)})")
    if kind == "auto":
        if testset is not None:
            return "testset", None
        return "random", (f"the model has no test set ({TESTSET}): running on random inputs "
                          "drawn from its input specs")
    return ("testset" if kind == "digits" else kind), None


@dataclass(frozen=True)
class SourceOptions:
    """Settings of the sources of outside frames (``sourcePath``, ``sourceLoop``,
    ``shmName``, ``shmSlots``) and the model metadata their pre-processing follows."""

    path: str | None = None  # images: folder/glob/file; video: file/URL; camera: index/device;
    # testset: an .npz to replay instead of the model's own test set
    loop: bool = True  # images and video files: start over at the end (False: end there)
    shm_name: str | None = None  # shm: the ring to create (None: the self-fed demo ring)
    shm_slots: int = 8
    metadata: ModelMetadata | None = field(default=None, compare=False)


def make_source_factory(
    kind: str, backend: Backend, testset: Path | None, rate_hz: float,
    options: SourceOptions | None = None,
) -> Callable[[tuple[np.ndarray, ...]], Source]:
    """A factory the loop calls with its freshly allocated input buffers.

    ``kind`` is one of :data:`SOURCE_KINDS`; ``auto`` is resolved by :func:`choose_source`
    (its note logged). ``testset`` on a model without one is a :class:`ConfigError`; so is
    an image source for a model without image pre-processing metadata, and a path that
    names nothing (:class:`SourceError`): both are found here, before the loop is built."""
    chosen, note = choose_source(kind, testset)
    opts = options or SourceOptions()
    if chosen == "testset" and opts.path:
        testset = Path(opts.path)
        if not testset.is_file():
            raise ConfigError(f"source testset: sourcePath {opts.path} is not a file (an "
                              f".npz with '{SINGLE_INPUT_KEY}' or one array per input, and "
                              f"labels '{LABELS_KEY}' optionally)")
    frames = _frame_factory(chosen, backend, opts) if chosen in FRAME_KINDS else None

    def factory(buffers: tuple[np.ndarray, ...]) -> Source:
        if note is not None:
            log.info(note)
        if frames is not None:
            return frames(buffers)
        if chosen == "api":
            return ApiSource()
        if chosen == "shm" and opts.shm_name is not None:
            return ShmSource.named(buffers=buffers, specs=backend.inputs, name=opts.shm_name,
                                   slots=opts.shm_slots)
        if chosen == "random":
            return RandomSource(buffers=buffers, specs=backend.inputs)
        if chosen == "testset":
            if testset is None:
                raise ConfigError(f"this model has no test set ({TESTSET}); {NO_TESTSET_HINT}")
            data = read_testset(testset, backend.inputs)
            if len(buffers) != 1:
                return MultiReplaySource(buffers=buffers, testset=data)
            (buffer,) = buffers
            sample_shape = buffer.shape[1:] if buffer.shape[:1] == (1,) else buffer.shape
            x = data.inputs[0].reshape((len(data), *sample_shape))
            return ReplaySource(buffer=buffer, x=x, y=data.labels)
        if len(buffers) != 1:
            raise ConfigError(f"--source {chosen} feeds single-input models; use --source "
                              "random or testset")
        return ShmSource.spawn(buffer=buffers[0], testset=testset, rate_hz=rate_hz)

    return factory


def _frame_factory(kind: str, backend: Backend,
                   opts: SourceOptions) -> Callable[[tuple[np.ndarray, ...]], Source]:
    pre = image_preprocessor(kind, backend.inputs, opts.metadata)
    if kind == "images":
        paths = list_images(opts.path)
        return lambda buffers: ImageSource(buffer=buffers[0], preprocessor=pre, paths=paths,
                                           loop=opts.loop, where=opts.path)
    where = video_input(kind, opts.path)
    return lambda buffers: VideoSource(buffer=buffers[0], preprocessor=pre, source=where,
                                       loop=opts.loop)
