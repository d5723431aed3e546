"""Split logic, threshold choice and output keys of the evaluation core, on hand-built data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from isnetflow.config import EvaluateConfig
from isnetflow.evaluation.core import EvaluationError, evaluate_model, evaluate_predictions
from isnetflow.evaluation.metrics import binary_metrics, youden_threshold
from isnetflow.evaluation.report import flat_metrics, json_safe, kfp_classification_metrics, render_html
from isnetflow.training.data import TrainData

CFG = EvaluateConfig(n_boot=50, audit_per_site=2, counterfactual_max=20, gallery_per_group=1)


def _data(size: int = 8) -> tuple[TrainData, np.ndarray]:
    """2 internal sites (train/val/test) + 2 external sites; one patient per two images."""
    rows = [
        # site, split, label, p(positive)
        *[("In1", "train", i % 2, np.nan) for i in range(4)],
        ("In1", "val", 0, 0.2), ("In1", "val", 0, 0.55), ("In1", "val", 1, 0.5), ("In1", "val", 1, 0.9),
        ("In1", "test", 0, 0.1), ("In1", "test", 1, 0.8),
        ("In2", "test", 0, 0.3), ("In2", "test", 1, 0.45), ("In2", "test", 1, 0.7), ("In2", "test", 0, 0.6),
        ("Ex1", "external", 0, 0.7), ("Ex1", "external", 1, 0.6), ("Ex1", "external", 0, 0.2),
        ("Ex1", "external", 1, 0.9),
        ("Ex2", "external", 0, 0.4), ("Ex2", "external", 0, 0.5),  # a single-class site
    ]  # fmt: skip
    n = len(rows)
    p = np.array([r[3] for r in rows])
    proba = np.stack([1 - p, p], axis=1)
    data = TrainData(
        images=torch.rand(n, 1, size, size),
        masks=(torch.rand(n, 1, size, size) > 0.5).float(),
        labels=torch.tensor([r[2] for r in rows]),
        classes=["normal", "covid"],
        patient_ids=[f"{r[0]}-{i // 2}" for i, r in enumerate(rows)],
        sites=[r[0] for r in rows],
        splits=[r[1] for r in rows],
    )
    return data, proba


def test_split_membership_threshold_and_gap() -> None:
    data, proba = _data()
    out = evaluate_predictions(data, proba, CFG)
    y = data.labels.numpy()
    s = proba[:, 1]
    val = data.indices("val")
    thr = youden_threshold(y[val], s[val])
    assert out["threshold"] == {"value": thr, "method": "youden_j_internal_val", "n": 4}

    test = data.indices("test")
    ext = data.indices("external")
    for name, idx in (("internal_val", val), ("internal_test", test), ("external_pooled", ext)):
        expected = binary_metrics(y[idx], s[idx], thr).as_dict()
        got = out["splits"][name]
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, nan_ok=True), (name, k)
        assert got["n_patients"] == len({data.patient_ids[i] for i in idx})
    assert out["sites"]["In2"] == pytest.approx(
        {**out["sites"]["In2"], "n": 4, "role": "internal", "split": "test"}, nan_ok=True
    )
    assert out["sites"]["In1"]["n"] == 2  # only its test images, never train/val
    assert out["sites"]["Ex1"]["role"] == "external" and out["sites"]["Ex1"]["n"] == 4
    assert math.isnan(out["sites"]["Ex2"]["auc"])  # one class only: AUC undefined, not an error
    gap = out["splits"]["internal_test"]["auc"] - out["splits"]["external_pooled"]["auc"]
    assert out["gap"]["internal_minus_external_auc"] == pytest.approx(gap)
    lo, hi = out["splits"]["external_pooled"]["auc_ci_low"], out["splits"]["external_pooled"]["auc_ci_high"]
    assert lo <= out["splits"]["external_pooled"]["auc"] <= hi

    cm = kfp_classification_metrics(out)["external_pooled"]["confusion_matrix"]
    assert cm["categories"] == ["normal", "covid"] and sum(map(sum, cm["matrix"])) == ext.size


def test_site_filter_and_fixed_threshold() -> None:
    data, proba = _data()
    out = evaluate_predictions(data, proba, CFG, sites=["Ex1"])
    assert list(out["sites"]) == ["Ex1"]
    assert out["splits"]["external_pooled"]["n"] == 4
    assert out["splits"]["internal_test"]["n"] == 6  # no internal site selected: all internal test images
    out = evaluate_predictions(data, proba, CFG, sites=["In2", "Ex2"])
    assert out["splits"]["internal_test"]["n"] == 4 and out["splits"]["external_pooled"]["n"] == 2
    with pytest.raises(EvaluationError, match="Nowhere"):
        evaluate_predictions(data, proba, CFG, sites=["Nowhere"])
    fixed = evaluate_predictions(data, proba, CFG.model_copy(update={"threshold": 0.65}))
    assert fixed["threshold"]["method"] == "fixed"
    assert fixed["splits"]["external_pooled"]["sensitivity"] == pytest.approx(0.5)  # 0.6 < .65 <= 0.9


def test_threshold_needs_both_classes_in_validation() -> None:
    data, proba = _data()
    data.labels[data.indices("val")] = 0
    with pytest.raises(EvaluationError, match="validation split"):
        evaluate_predictions(data, proba, CFG)


def test_evaluate_model_with_audit_writes_documented_keys(tmp_path) -> None:
    data, _ = _data(size=16)  # 12 evaluated images: 6 internal test + 6 external
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(4, 2),
    ).eval()
    res = evaluate_model(model, data, CFG)
    p = res.payload
    assert np.isnan(res.proba[data.indices("train")]).all()  # never predicted: not needed
    assert set(p["splits"]) == {"internal_val", "internal_test", "external_pooled"}
    bg = p["audit"]["background_share"]
    assert bg["n_images"] == 8  # 2 per site (In1 has 2 test images, Ex2 2 images)
    assert 0.0 <= bg["pooled"] <= 1.0 and set(bg["per_site"]) == {"In1", "In2", "Ex1", "Ex2"}
    assert 0.3 < bg["background_area"] < 0.7  # random masks cover about half of each image
    cf = p["audit"]["counterfactual"]
    assert cf["n_pairs"] == 12 and 0.0 <= cf["flip_rate"] <= 1.0 and cf["mean_abs_score_change"] >= 0
    assert res.audit is not None and res.audit.relevance.shape == (8, 1, 16, 16)
    safe = json_safe(p)
    text = json.dumps(safe, allow_nan=False)  # NaN (e.g. Ex2's AUC) became null
    assert '"auc": null' in text
    flat = flat_metrics(safe)
    assert "splits.external_pooled.auc" in flat and "audit.counterfactual.flip_rate" in flat
    assert all(math.isfinite(v) for v in flat.values())
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG fake")
    page = render_html(safe, [("a figure", png)], title="t")
    assert page.count("data:image/png;base64,") == 1 and "Shortcut audit" in page and "Ex1" in page
