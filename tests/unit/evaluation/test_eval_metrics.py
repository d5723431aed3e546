"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isnetflow.evaluation.metrics import (
    auc_or_nan,
    binary_metrics,
    binary_targets,
    confusion,
    expected_calibration_error,
    positive_scores,
    rank_auc,
    reliability_curve,
    roc_points,
    youden_threshold,
)

# Four images: negatives score 0.1 and 0.4, positives 0.35 and 0.8.
Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def test_auc_by_hand() -> None:
    # positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4) -> 3/4
    assert auc_or_nan(Y, S) == pytest.approx(0.75)
    assert math.isnan(auc_or_nan(np.array([1, 1]), np.array([0.2, 0.3])))


def test_threshold_metrics_by_hand() -> None:
    m = binary_metrics(Y, S, threshold=0.5)
    # predictions at 0.5: [0, 0, 0, 1] -> tp=1, fn=1, tn=2, fp=0
    assert (m.n, m.n_positive) == (4, 2)
    assert m.sensitivity == pytest.approx(0.5)
    assert m.specificity == pytest.approx(1.0)
    assert m.balanced_accuracy == pytest.approx(0.75)
    assert m.f1 == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    # Brier: mean of 0.1^2, 0.4^2, 0.65^2, 0.2^2
    assert m.brier == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert confusion(Y, S, 0.5) == [[2, 0], [1, 1]]
    # score == threshold counts as positive
    assert binary_metrics(Y, S, threshold=0.35).sensitivity == pytest.approx(1.0)


def test_ece_by_hand() -> None:
    # 10 bins: every image alone in its bin -> mean |y - s| = (0.1 + 0.4 + 0.65 + 0.2) / 4
    assert expected_calibration_error(Y, S, 10) == pytest.approx(1.35 / 4)
    # 2 bins: [0, .5) holds s=.1,.4,.35 with y=0,0,1 -> |1/3 - .85/3| * 3/4; [.5, 1] holds .8/y=1 -> .2 * 1/4
    assert expected_calibration_error(Y, S, 2) == pytest.approx(abs(1 / 3 - 0.85 / 3) * 0.75 + 0.2 * 0.25)
    # a score of exactly 1.0 lands in the last (closed) bin
    assert expected_calibration_error(np.array([1]), np.array([1.0]), 10) == pytest.approx(0.0)
    curve = reliability_curve(Y, S, 2)
    assert curve.count == [3, 1]
    assert curve.mean_score == pytest.approx([0.85 / 3, 0.8])
    assert curve.observed_rate == pytest.approx([1 / 3, 1.0])


def test_youden_threshold_picks_best_and_highest_on_ties() -> None:
    # J at 0.8: tpr .5 - fpr 0 = .5; at 0.35: tpr 1 - fpr .5 = .5 (tie) -> the higher threshold wins
    assert youden_threshold(Y, S) == pytest.approx(0.8)
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    # J at 0.5: tpr 1 - fpr 1/3 = .667 (best); at 0.7: tpr 2/3 - 0 = .667 tie -> 0.7
    assert youden_threshold(y, s) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(np.array([1, 1]), np.array([0.1, 0.2]))


def test_positive_scores_and_targets_multiclass() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(positive_scores(proba), [0.3, 0.9])
    np.testing.assert_array_equal(binary_targets(np.array([0, 2, 1, 0])), [0, 1, 1, 0])
    with pytest.raises(ValueError, match="probabilities"):
        positive_scores(np.array([0.1, 0.2]))


def test_single_class_metrics_are_nan_not_errors() -> None:
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.6, 0.2]), 0.5)
    assert math.isnan(m.auc) and math.isnan(m.sensitivity) and math.isnan(m.balanced_accuracy)
    assert m.specificity == pytest.approx(2 / 3)
    empty = binary_metrics(np.array([], dtype=int), np.array([]), 0.5)
    assert empty.n == 0 and math.isnan(empty.auc)


def test_roc_points_are_json_safe_and_thinned() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    s = rng.random(1000)
    pts = roc_points(y, s, max_points=50)
    assert len(pts["fpr"]) <= 50 and len(pts["fpr"]) == len(pts["tpr"]) == len(pts["thresholds"])
    assert pts["fpr"][0] == 0.0 and pts["fpr"][-1] == 1.0 and pts["tpr"][-1] == 1.0
    assert all(0.0 <= t <= 1.0 for t in pts["thresholds"])


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_rank_auc_equals_sklearn_with_and_without_ties(decimals: int | None) -> None:
    """The bootstrap's AUC (ranks, Mann-Whitney) is scikit-learn's, ties counted one half included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    for n in (2, 5, 40, 333):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        score = rng.random(n) + 0.4 * y
        if decimals is not None:
            score = np.round(score, decimals)  # decimals 0: nearly every score tied
        assert rank_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert rank_auc(np.array([0, 1, 1]), np.array([0.9, 0.1, 0.2])) == 0.0
    assert rank_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert math.isnan(rank_auc(np.ones(4, dtype=int), np.arange(4.0)))
    assert math.isnan(rank_auc(np.zeros(0, dtype=int), np.zeros(0)))
