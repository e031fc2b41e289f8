"""Top-1 scores of a model's outputs, for the low-confidence capture rule.

The scores are the output the model's metadata names (``postprocess.output``, else the
first output); with ``postprocess.softmax`` they are logits and the score is the
softmax's top-1, otherwise they are taken as probabilities and the score is their
maximum. On the inference path the bound output buffer is read through a flat
``memoryview`` (:func:`scores_view`): Python's ``max`` over a few dozen numbers costs a
fraction of numpy's call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from agent.core.model_metadata import ModelMetadata


def score_setup(metadata: ModelMetadata | None, output_names: Sequence[str]) -> tuple[int, bool]:
    """Which output holds the class scores, and whether they are logits (softmax first)."""
    post = metadata.postprocess if metadata is not None else None
    index = 0
    if post is not None and post.output is not None and post.output in output_names:
        index = list(output_names).index(post.output)
    return index, bool(post is not None and post.softmax)


def top1_score(scores: np.ndarray, logits: bool) -> float:
    """The top-1 probability of one sample's scores (a softmax of logits first)."""
    if not logits:
        return float(scores.max())
    values = scores.astype(np.float64, copy=False)
    return float(1.0 / np.exp(values - values.max()).sum())


Scores = memoryview | np.ndarray
_NUMBERS = frozenset("bBhHiIlLqQfd")  # what a memoryview iterates (not float16)


def scores_view(scores: np.ndarray) -> Scores:
    """A flat memoryview on a bound output buffer (it follows the buffer's contents), for
    :func:`view_top1`: Python's ``max`` over a few dozen numbers is several times cheaper
    than numpy's. The array itself where no such view fits (not contiguous, another
    dtype)."""
    if not scores.flags.c_contiguous or scores.size == 0:
        return scores
    try:
        view = scores.reshape(-1).data  # a view: contiguous, so no copy is made
    except (TypeError, ValueError, BufferError, AttributeError):
        return scores
    return view if view.format in _NUMBERS and view.ndim == 1 else scores


def view_top1(scores: Scores, logits: bool, _exp: Callable[[float], float] = math.exp
              ) -> float:
    """:func:`top1_score` of a :func:`scores_view`."""
    if isinstance(scores, np.ndarray):
        return top1_score(scores, logits)
    top = max(scores)
    if not logits:
        return float(top)
    total = 0.0
    for value in scores:
        total += _exp(value - top)
    return 1.0 / total
