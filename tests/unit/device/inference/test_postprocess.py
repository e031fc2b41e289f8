"""Scores to named classes: ranking, softmax, labels, the metadata's choices, bad scores."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_metadata import ModelMetadata, Postprocess
from agent.device.inference.postprocess import Prediction, predictions, softmax, top_k

LABELS = ("cat", "dog", "fox", "owl")


def test_top_k_ranks_best_first_with_labels() -> None:
    best = top_k(np.array([[0.1, 0.6, 0.05, 0.25]], np.float32), 2, LABELS)
    assert best == [Prediction(1, "dog", pytest.approx(0.6)),
                    Prediction(3, "owl", pytest.approx(0.25))]
    assert best[0].to_dict() == {"index": 1, "label": "dog", "score": best[0].score}


def test_top_k_without_labels_and_k_beyond_the_classes() -> None:
    best = top_k(np.array([3.0, 1.0, 2.0]), 10)
    assert [(p.index, p.label, p.score) for p in best] == [(0, None, 3.0), (2, None, 2.0),
                                                           (1, None, 1.0)]


def test_ties_keep_the_lower_index_first() -> None:
    assert [p.index for p in top_k(np.array([0.5, 0.2, 0.5]), 3)] == [0, 2, 1]


def test_softmax_turns_logits_into_probabilities() -> None:
    logits = np.array([[2.0, 1.0, 0.1, 1000.0]], np.float32)  # 1000: no overflow
    best = top_k(logits, 4, LABELS, softmax=True)
    expected = np.exp(logits[0] - 1000.0) / np.exp(logits[0] - 1000.0).sum()
    assert best[0].label == "owl" and sum(p.score for p in best) == pytest.approx(1.0)
    assert [p.score for p in best] == pytest.approx(sorted(expected, reverse=True))
    assert softmax(np.array([0.0, 0.0])).tolist() == [0.5, 0.5]


def test_metadata_names_the_scores_output_k_and_softmax() -> None:
    meta = ModelMetadata(labels=("no", "yes"),
                         postprocess=Postprocess(output="logits", softmax=True, top_k=1))
    outputs = {"boxes": np.zeros((1, 8), np.float32),
               "logits": np.array([[0.0, 2.0]], np.float32)}
    name, best = predictions(outputs, meta)
    assert name == "logits" and len(best) == 1 and best[0].label == "yes"
    assert best[0].score == pytest.approx(1 / (1 + np.exp(-2.0)))
    _, both = predictions(outputs, meta, k=2)  # the caller's k wins
    assert [p.label for p in both] == ["yes", "no"]


def test_labels_alone_rank_the_first_output_top_5() -> None:
    meta = ModelMetadata(labels=tuple(f"c{i}" for i in range(7)))
    name, best = predictions({"probs": np.arange(7, dtype=np.float32)[None]}, meta)
    assert name == "probs" and [p.label for p in best] == ["c6", "c5", "c4", "c3", "c2"]


def test_a_batch_of_two_is_refused() -> None:
    with pytest.raises(InputSpecError) as err:
        top_k(np.zeros((2, 4)), 1)
    assert str(err.value) == "scores of shape [2, 4] hold 2 samples; top-k ranks one"


def test_labels_that_do_not_match_the_scores() -> None:
    with pytest.raises(ConfigError) as err:
        top_k(np.zeros((1, 3)), 1, LABELS)
    assert str(err.value) == "4 labels for 3 scores"


def test_k_below_one() -> None:
    with pytest.raises(ConfigError, match="top-k must be >= 1, got 0"):
        top_k(np.zeros(3), 0)


def test_scores_output_that_the_model_does_not_have() -> None:
    meta = ModelMetadata(postprocess=Postprocess(output="scores"))
    with pytest.raises(ConfigError) as err:
        predictions({"probs": np.zeros((1, 3))}, meta)
    assert str(err.value) == ("metadata.postprocess.output: no output named 'scores' "
                              "(outputs: probs)")


def test_empty_scores() -> None:
    with pytest.raises(InputSpecError, match="no scores to rank"):
        top_k(np.zeros((1, 0)), 1)
