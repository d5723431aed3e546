"""Model selection and the evaluation measure the background share with the same audit settings.

The selection limit (the validation background share, :func:`isnetflow.training.validation.validate_epoch`)
and the background-share gate (:func:`isnetflow.evaluation.core.run_audit`) both explain through
:func:`isnetflow.audit.explain.audit_relevance`; these tests record what reaches zennit's ``explain`` from
each side under one :class:`~isnetflow.config.Settings`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from isnetflow.audit import explain as explain_module
from isnetflow.config import Settings
from isnetflow.evaluation.core import run_audit
from isnetflow.nets import build_model
from isnetflow.training.data import TrainData
from isnetflow.training.validation import validate_epoch

RULES = ("composite", "epsilon", "gamma")


def _data(n: int = 16, size: int = 16) -> TrainData:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, 4:12, 3:13] = 1
    splits = ["val"] * 8 + ["test"] * 4 + ["external"] * 4
    sites = ["In"] * 12 + ["Ex"] * 4
    return TrainData(
        torch.rand(n, 1, size, size, generator=g), masks, torch.arange(n) % 2, ["normal", "covid"],
        [f"p{i}" for i in range(n)], sites, splits,
    )  # fmt: skip


def _explained(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What ``explain`` received from the selection's validation and from the evaluation's audit."""
    calls: list[dict[str, Any]] = []

    def recording(model: Any, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> np.ndarray:
        calls.append({**kwargs, "targets": targets.tolist()})
        return np.ones(tuple(images.shape), dtype=np.float32)

    monkeypatch.setattr(explain_module, "explain", recording)
    data = _data()
    model = build_model("cnn-small", 2)
    cfg = settings.train.model_copy(update={"audit_samples": 4})
    validate_epoch(cfg, data, model, data.indices("val"), None, None)
    selection = list(calls)
    calls.clear()
    proba = np.tile([0.3, 0.7], (len(data), 1))  # every image predicted "covid"
    evaluate = settings.evaluate.model_copy(update={"audit_per_site": 2, "counterfactual_max": 0})
    run_audit(model, data, proba, 0.5, evaluate, ["In", "Ex"])
    return selection, list(calls)


@pytest.mark.parametrize(
    "audit",
    [{}, {"gamma": 0.5}, {"composite": "epsilon_plus_flat", "epsilon": 1e-3}, {"composite": "epsilon"}],
)
def test_selection_and_evaluation_explain_with_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, audit: dict[str, Any]
) -> None:
    settings = Settings.model_validate({"audit": audit})
    selection, evaluation = _explained(monkeypatch, settings)
    assert selection and evaluation
    expected = {k: getattr(settings.audit, k) for k in RULES}
    for call in selection + evaluation:
        assert {k: call[k] for k in RULES} == expected


def test_setting_gamma_changes_what_selection_explains_with(monkeypatch: pytest.MonkeyPatch) -> None:
    default, _ = _explained(monkeypatch, Settings())
    changed, evaluation = _explained(monkeypatch, Settings.model_validate({"audit": {"gamma": 0.9}}))
    assert default[0]["gamma"] == 0.25
    assert changed[0]["gamma"] == evaluation[0]["gamma"] == 0.9


def test_both_explain_the_predicted_class_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    by_label, _ = _explained(monkeypatch, Settings())
    assert by_label[0]["targets"] == [0, 1, 0, 1]  # the first 4 validation images' labels
    predicted = Settings.model_validate({"audit": {"target": "predicted"}})
    selection, evaluation = _explained(monkeypatch, predicted)
    model_says = selection[0]["targets"]
    assert len(model_says) == 4 and set(model_says) <= {0, 1}
    assert all(t == 1 for call in evaluation for t in call["targets"])  # the given probabilities say covid
