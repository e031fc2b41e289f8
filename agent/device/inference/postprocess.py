"""From a model's class scores to what a person reads: the best classes, named.

:func:`top_k` ranks one sample's scores (optionally through a softmax first) and names
each class from the model's ``labels``; :func:`predictions` applies a model's
:class:`~agent.core.model_metadata.Postprocess` to its outputs. ``edge-agent predict`` prints
the result; result streams report the same :class:`Prediction` objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_metadata import ModelMetadata

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Prediction:
    """One ranked class: its index in the scores, its label (None when unnamed), its score."""

    index: int
    label: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": self.score}


def softmax(scores: np.ndarray) -> np.ndarray:
    """The softmax of ``scores`` (float64, shifted by the maximum so it cannot overflow)."""
    values = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(values - values.max())
    result: np.ndarray = shifted / shifted.sum()
    return result


_softmax = softmax  # top_k's flag of the same name hides the function inside it


def sample_scores(scores: np.ndarray) -> np.ndarray:
    """One sample's scores, flat: ``scores`` without a leading batch dimension of 1.

    Raises :class:`InputSpecError` for a batch of more than one sample or no scores."""
    array = np.asarray(scores)
    if array.ndim > 1 and array.shape[0] != 1:
        raise InputSpecError(f"scores of shape {list(array.shape)} hold {array.shape[0]} "
                             "samples; top-k ranks one")
    flat = array.reshape(-1)
    if flat.size == 0:
        raise InputSpecError("no scores to rank (an empty output)")
    return flat


def top_k(scores: np.ndarray, k: int, labels: Sequence[str] | None = None,
          softmax: bool = False) -> list[Prediction]:
    """The ``k`` best classes of one sample's ``scores``, best first (ties: lower index first).

    ``labels`` name the classes, one per score; ``softmax`` turns logits into
    probabilities before ranking. ``k`` larger than the number of classes gives them all.
    """
    if k < 1:
        raise ConfigError(f"top-k must be >= 1, got {k}")
    flat = sample_scores(scores)
    if labels is not None and len(labels) != flat.size:
        raise ConfigError(f"{len(labels)} labels for {flat.size} scores")
    values = _softmax(flat) if softmax else flat.astype(np.float64)
    order = np.argsort(-values, kind="stable")[:k]
    return [Prediction(index=int(i), label=None if labels is None else labels[int(i)],
                       score=float(values[i])) for i in order]


def scores_output(metadata: ModelMetadata | None, output_names: Sequence[str]) -> str:
    """The output holding class scores: ``postprocess.output``, else the first output."""
    post = metadata.postprocess if metadata is not None else None
    if post is not None and post.output is not None:
        if post.output not in output_names:
            raise ConfigError(f"metadata.postprocess.output: no output named {post.output!r} "
                              f"(outputs: {', '.join(output_names)})")
        return post.output
    if not output_names:
        raise ConfigError("the model has no output")
    return output_names[0]


def wants_top_k(metadata: ModelMetadata | None) -> bool:
    """Whether a model's description asks for ranked classes (post-processing or labels)."""
    return metadata is not None and (metadata.postprocess is not None
                                     or metadata.labels is not None)


def predictions(outputs: Mapping[str, np.ndarray], metadata: ModelMetadata | None,
                k: int | None = None) -> tuple[str, list[Prediction]]:
    """The scores output's name and its top-k, as ``metadata`` describes them.

    ``k`` overrides ``postprocess.top_k`` (default :data:`DEFAULT_TOP_K`); the softmax is
    applied when ``postprocess.softmax`` says so; ``labels`` name the classes.
    """
    name = scores_output(metadata, list(outputs))
    post = metadata.postprocess if metadata is not None else None
    labels = metadata.labels if metadata is not None else None
    count = k if k is not None else (post.top_k if post is not None else DEFAULT_TOP_K)
    return name, top_k(outputs[name], count, labels,
                       softmax=post is not None and post.softmax)
