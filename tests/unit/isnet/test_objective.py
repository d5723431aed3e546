"""The objective owns its parts: every part is trained, the settings reach it whole, no import circle."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import isnetflow.isnet.objective as objective
from isnetflow.config import HeatmapLossConfig
from isnetflow.isnet import (
    CLASSIFIER_PARTS,
    PART_HISTORY_KEYS,
    ISNetLossConfig,
    ISNetOutput,
    isnet_objective,
    isnet_step,
    loss_config_from_settings,
    part_values,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 2),
    )  # fmt: skip


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(6, 1, 8, 8, generator=gen)
    masks = torch.zeros(6, 1, 8, 8)
    masks[:, :, 2:6, 1:7] = 1
    return images, torch.tensor([0, 1, 0, 1, 1, 0]), masks


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("variant", ["selective", "stochastic", "all", "standard"])
def test_the_loss_is_the_sum_of_the_named_parts(variant: str) -> None:
    cfg = ISNetLossConfig(variant=variant, C1=0.01, C2=0.05)
    out = isnet_objective(_net(), *_batch()[:2], _batch()[2], cfg, generator=torch.Generator().manual_seed(0))
    assert "cross_entropy" in out.parts and "cross_entropy" in CLASSIFIER_PARTS
    assert float(out.loss.detach()) == pytest.approx(float(sum(out.parts.values()).detach()), rel=1e-12)
    if variant == "standard":
        assert set(out.parts) == {"cross_entropy"} and out.heatmaps is None
    else:
        assert set(out.parts) == {"cross_entropy", "heatmap"}
        assert float(out.parts["heatmap"].detach()) == pytest.approx(
            cfg.P * float((cfg.A * out.background + cfg.B * out.foreground).detach())
        )


@pytest.mark.parametrize("extra_part", ["relevance_extra", "cross_entropy"])
def test_a_part_added_to_the_objective_is_trained(monkeypatch: pytest.MonkeyPatch, extra_part: str) -> None:
    """The step differentiates every part the objective returns: a new relevance part (capped with the
    heatmap part) or a new classifier-side term changes the gradient, and without cap and projection the
    step's gradient is exactly the gradient of the whole loss."""
    images, labels, masks = _batch()
    cfg = ISNetLossConfig(C1=0.01, C2=0.05, grad_balance=None)
    real_loss = objective.isnet_loss

    def with_extra(logits, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_loss(logits, *args, **kwargs)
        extra = 3.0 * logits.pow(2).mean()
        parts = dict(out.parts)
        parts[extra_part] = parts[extra_part] + extra if extra_part in parts else extra
        return ISNetOutput(parts=parts, terms=out.terms, logits=out.logits, heatmaps=out.heatmaps)

    model = _net()
    isnet_step(model, images, labels, masks, cfg)
    without = _grads(model)

    monkeypatch.setattr(objective, "isnet_loss", with_extra)
    model = _net()
    out, _ = isnet_step(model, images, labels, masks, cfg)
    trained = _grads(model)
    model = _net()
    model.zero_grad()
    isnet_objective(model, images, labels, masks, cfg).loss.backward()
    for got, total in zip(trained, _grads(model), strict=True):
        torch.testing.assert_close(got, total, rtol=1e-3, atol=2e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(trained, without, strict=True))
    assert extra_part in out.parts


def test_every_part_is_reported_under_its_history_keys() -> None:
    """Today's parts keep their history keys (the unweighted terms ``ce``, ``background``, ``foreground``);
    any other part is reported by its weighted value under its own name."""
    cfg = ISNetLossConfig(C1=0.01, C2=0.05)
    out = isnet_objective(_net(), *_batch()[:2], _batch()[2], cfg, generator=torch.Generator().manual_seed(0))
    out = out.with_parts({"distillation": out.cross_entropy * 0.5, "new_part": out.background * 2.0})
    values = part_values(out)
    assert list(values) == ["cross_entropy", "heatmap", "distillation", "new_part"]
    assert values["cross_entropy"] == {"ce": float(out.cross_entropy.detach())}
    assert values["heatmap"] == {"background": float(out.background.detach()),
                                 "foreground": float(out.foreground.detach())}  # fmt: skip
    assert values["distillation"] == {"distillation": float(out.parts["distillation"].detach())}
    assert values["new_part"] == {"new_part": float(out.parts["new_part"].detach())}
    assert {key for keys in PART_HISTORY_KEYS.values() for key in keys} == {"ce", "background", "foreground"}
    plain = isnet_objective(_net(), *_batch()[:2], _batch()[2], ISNetLossConfig(variant="standard"))
    assert part_values(plain) == {"cross_entropy": {"ce": float(plain.cross_entropy.detach())}}


def test_every_setting_reaches_the_objective() -> None:
    """``loss_config_from_settings`` carries every ``train.heatmap`` field (non-default values here), so a
    setting can never be silently dropped on the way to the loss."""
    changed = {
        "variant": "stochastic", "P": 0.4, "A": 2.0, "B": 0.5, "d": 0.9, "E": 2.0, "epsilon": 0.05,
        "first_layer": "epsilon", "low": -1.0, "high": 2.0, "selective_eps": 0.1,
        "stochastic_anchor": "highest", "stochastic_anchor_prob": 0.3, "bn_stats_grad": True, "C1": None,
        "C2": None, "grad_balance": 2.0,
        "ramp_epochs": 3, "grad_projection": True, "norm": "signed", "fg_region": "mask",
    }  # fmt: skip
    assert set(changed) == set(HeatmapLossConfig.model_fields)  # a new setting must be listed here
    defaults = HeatmapLossConfig()
    assert all(changed[k] != getattr(defaults, k) for k in changed)
    cfg = loss_config_from_settings(HeatmapLossConfig(**changed), 0.2, 0.9)
    assert (cfg.C1, cfg.C2) == (0.2, 0.9)
    for name, value in changed.items():
        if name not in ("C1", "C2"):
            assert getattr(cfg, name) == value, name
    with pytest.raises(ValueError, match=r"train\.mode standard"):
        loss_config_from_settings(HeatmapLossConfig(variant="standard"), 1.0, 2.0)


def test_an_unknown_variant_fails_before_the_first_training_step() -> None:
    from isnetflow.config import TrainConfig
    from isnetflow.training.data import TrainData
    from isnetflow.training.loop import train

    cfg = TrainConfig(heatmap=HeatmapLossConfig(variant="lasso"), epochs=1, device="cpu")
    data = TrainData(torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"],
                     ["p"] * 4, ["s"] * 4, ["train"] * 4)  # fmt: skip
    with pytest.raises(ValueError, match="unknown heatmap variant 'lasso'"):
        train(cfg, data, progress=False)


def test_the_settings_do_not_import_the_objective() -> None:
    """No import circle: ``isnetflow.config`` imports neither ``isnetflow.isnet`` nor torch."""
    code = (
        "import sys, isnetflow.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('isnetflow.isnet', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
