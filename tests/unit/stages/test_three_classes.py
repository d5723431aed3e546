"""Three classes end to end: synth -> validate -> train (ISNet and standard) -> evaluate -> promote check.

Everything in the README speaks of two classes; the settings allow more (``validate.classes``, the first is
the negative class). This runs the stage functions on a small three-class cohort and checks the class
order, the three-logit models, the multi-class metrics and the audit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isnetflow.config import EvaluateConfig, SynthConfig, ValidateConfig
from tests._configs import tiny_train_cfg

CLASSES = ["normal", "covid", "pneumonia"]


@pytest.fixture(scope="module")
def three_class_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from isnetflow.stages import validate
    from isnetflow.synth import generate_cohort

    root = tmp_path_factory.mktemp("three-classes")
    generate_cohort(
        SynthConfig(n=72, size=96, seed=2, classes=CLASSES, workers=1), root / "c", progress=False
    )
    info = json.loads((root / "c" / "cohort.json").read_text())
    vcfg = ValidateConfig(
        image_size=96, classes=CLASSES, min_images_per_site=1, workers=1,
        internal_sites=info["internal_sites"], external_sites=info["external_sites"],
    )  # fmt: skip
    result = validate.run(vcfg, root / "c" / "dicom", root / "validated", labels=root / "c" / "labels.csv")
    assert result.passed, result.summary
    return root, root / "validated", root / "c" / "masks"


@pytest.mark.parametrize("mode", ["isnet", "standard"])
def test_three_classes_train_and_evaluate(three_class_cohort: tuple[Path, Path, Path], mode: str) -> None:
    import torch

    from isnetflow.stages import evaluate, train

    root, validated, masks = three_class_cohort
    cfg = tiny_train_cfg(mode, test_fraction=0.1, audit_samples=6)
    uri = f"sqlite:///{root}/mlflow-{mode}.db"
    summary = train.run(cfg, validated, masks, root / mode, tracking_uri=uri, classes=CLASSES, progress=False)
    assert summary["classes"] == CLASSES  # the first is the negative class
    model = torch.load(root / mode / "model.pt", weights_only=False)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 3)
    history = (root / mode / "history.csv").read_text()
    assert "val_auc" in history.splitlines()[0]

    fast = EvaluateConfig(n_boot=30, audit_per_site=2, counterfactual_max=12, gallery_per_group=1)
    evaluate.run(
        fast, summary["model_uri"], validated, masks, root / f"eval-{mode}", tracking_uri=uri, progress=False
    )
    ev = json.loads((root / f"eval-{mode}" / "evaluation.json").read_text())
    # evaluation scores "not the first class" (1 - P(normal)): abnormal vs normal over all three classes
    ext = ev["splits"]["external_pooled"]
    assert 0 < ext["n_positive"] < ext["n"]
    assert ev["classification_metrics"]["external_pooled"]["confusion_matrix"]["categories"] == [
        "normal",
        "not normal",
    ]
    for split in ("internal_test", "external_pooled"):
        auc = ev["splits"][split]["auc"]
        assert auc is None or 0.0 <= auc <= 1.0, (split, auc)
    share = ev["audit"]["background_share"]["pooled"]
    assert np.isfinite(share) and 0.0 <= share <= 1.0
