"""Patient-level bootstrap: a patient's images stay together; intervals behave."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from isnetflow.evaluation.bootstrap import bootstrap_ci, patient_bootstrap_indices
from isnetflow.evaluation.metrics import auc_or_nan


def test_resampling_keeps_each_patients_images_together() -> None:
    pids = ["a", "a", "a", "b", "c", "c", "d"]
    groups = {"a": [0, 1, 2], "b": [3], "c": [4, 5], "d": [6]}
    rng = np.random.default_rng(1)
    seen_multi = False
    for idx in patient_bootstrap_indices(pids, 200, rng):
        counts = Counter(idx.tolist())
        draws = {}
        for pid, members in groups.items():
            member_counts = {counts.get(i, 0) for i in members}
            assert len(member_counts) == 1, f"patient {pid} split apart: {counts}"
            draws[pid] = member_counts.pop()
        assert sum(draws.values()) == 4  # as many patients drawn as there are patients
        assert len(idx) == sum(draws[p] * len(m) for p, m in groups.items())
        seen_multi |= max(draws.values()) > 1
    assert seen_multi  # with replacement: some patient is drawn twice


def test_ci_is_deterministic_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    s = y * 0.3 + rng.random(120)
    pids = [f"p{i // 2}" for i in range(120)]

    def stat(i: np.ndarray) -> float:
        return auc_or_nan(y[i], s[i])

    a = bootstrap_ci(stat, pids, n_boot=300, seed=3)
    b = bootstrap_ci(stat, pids, n_boot=300, seed=3)
    assert a == b
    assert a.low < a.estimate < a.high
    assert a.n_valid == 300 and a.level == 0.95


def test_patient_level_interval_is_wider_than_image_level_for_clustered_images() -> None:
    # 20 patients x 10 identical images: resampling images pretends to have 200 independent samples
    rng = np.random.default_rng(5)
    y_pat = np.array([0, 1] * 10)
    s_pat = y_pat * 0.2 + rng.random(20)
    y = np.repeat(y_pat, 10)
    s = np.repeat(s_pat, 10)

    def stat(i: np.ndarray) -> float:
        return auc_or_nan(y[i], s[i])

    patient = bootstrap_ci(stat, [f"p{i // 10}" for i in range(200)], n_boot=400, seed=0)
    image = bootstrap_ci(stat, [f"img{i}" for i in range(200)], n_boot=400, seed=0)
    assert (patient.high - patient.low) > 2 * (image.high - image.low)


def test_undefined_replicates_are_dropped_or_reported_as_nan() -> None:
    y = np.zeros(10, dtype=int)
    s = np.linspace(0, 1, 10)
    ci = bootstrap_ci(lambda i: auc_or_nan(y[i], s[i]), [str(i) for i in range(10)], n_boot=50)
    assert ci.n_valid == 0 and math.isnan(ci.low) and math.isnan(ci.high) and math.isnan(ci.estimate)
    perfect = np.array([0, 0, 0, 1, 1, 1])
    ci = bootstrap_ci(
        lambda i: auc_or_nan(perfect[i], perfect[i] + 0.0), [str(i) for i in range(6)], n_boot=200
    )
    assert ci.low == ci.high == ci.estimate == 1.0 and 0 < ci.n_valid < 200


def test_evaluation_interval_is_the_one_of_sklearns_auc() -> None:
    """set_metrics' replicates use the rank AUC: the interval equals roc_auc_score's on every replicate."""
    from isnetflow.config import EvaluateConfig
    from isnetflow.evaluation.core import set_metrics

    rng = np.random.default_rng(3)
    pids = [f"p{i // 2}" for i in range(120)]
    y = rng.integers(0, 2, 120)
    score = np.round((rng.random(120) + 0.5 * y) / 1.5, 2)  # probabilities, ties too
    cfg = EvaluateConfig(n_boot=200)
    m = set_metrics(y, score, pids, 0.5, cfg)
    ref = bootstrap_ci(lambda idx: auc_or_nan(y[idx], score[idx]), pids, n_boot=200, seed=cfg.seed,
                       level=cfg.ci_level)  # fmt: skip
    assert m["auc"] == ref.estimate
    assert m["auc_ci_low"] == pytest.approx(ref.low, abs=1e-12)
    assert m["auc_ci_high"] == pytest.approx(ref.high, abs=1e-12)
