"""One AUC for model selection and the evaluation: abnormal (every class but the first) vs normal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from isnetflow.evaluation.metrics import abnormal_auc, auc_or_nan, binary_targets, positive_scores


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_two_classes_is_the_positive_class_auc() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    proba = _softmax(rng.normal(size=(50, 2)) + labels[:, None] * [0.0, 1.0])
    assert abnormal_auc(labels, proba) == float(roc_auc_score(labels, proba[:, 1]))


def test_more_classes_score_any_finding_against_the_first_class() -> None:
    """Three classes: the evaluation's AUC (``1 - P(normal)`` for normal vs not normal), not the macro
    one-vs-rest AUC model selection used before."""
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    proba = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.1, 0.3], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
         [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1], [0.2, 0.1, 0.7]]
    )  # fmt: skip
    got = abnormal_auc(labels, proba)
    assert got == auc_or_nan(binary_targets(labels), positive_scores(proba))
    assert got == pytest.approx(roc_auc_score(labels != 0, 1 - proba[:, 0]))
    assert got != pytest.approx(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


def test_undefined_without_both_groups() -> None:
    proba = np.full((4, 3), 1 / 3)
    assert math.isnan(abnormal_auc(np.array([1, 2, 1, 2]), proba))  # all abnormal
    assert math.isnan(abnormal_auc(np.array([0, 0, 0, 0]), proba))
    assert math.isnan(abnormal_auc(np.zeros(0, dtype=np.int64), np.zeros((0, 2))))
