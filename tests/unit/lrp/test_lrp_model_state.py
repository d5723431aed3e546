"""``relevance`` / ``lrp_forward`` must leave the model exactly as they found it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet
from torch import nn

from isnetflow.lrp import UnsupportedLayerError, lrp_forward, relevance

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


def _densenet() -> nn.Module:
    # MONAI builds its ReLUs with inplace=True.
    return DenseNet(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=2, block_config=(2, 2)
    )


def _snapshot(model: nn.Module) -> dict:
    return {
        "types": [(name, type(m)) for name, m in model.named_modules()],
        "inplace": [(name, m.inplace) for name, m in model.named_modules() if hasattr(m, "inplace")],
        "training": [(name, m.training) for name, m in model.named_modules()],
        "hooks": [
            (
                name,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(m._backward_pre_hooks),
            )
            for name, m in model.named_modules()
        ],
        "state_ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def _assert_same(before: dict, after: dict) -> None:
    for key in ("types", "inplace", "training", "hooks", "state_ids"):
        assert before[key] == after[key], key
    for name, value in before["state"].items():
        torch.testing.assert_close(after["state"][name], value, rtol=0, atol=0)


def _ce_grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    F.cross_entropy(model(images), labels).backward()
    model.load_state_dict(state)  # undo the running-statistics update of this check itself
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("first_layer", ["zbox", "epsilon"])
def test_relevance_leaves_model_unchanged(train, first_layer):
    torch.manual_seed(0)
    model = _densenet().train(train)
    calls = []
    model.features.conv0.register_forward_hook(lambda *_: calls.append(1))
    images = torch.rand(3, 1, 32, 32)
    labels = torch.tensor([0, 1, 1])
    grads_before = _ce_grads(model, images, labels)
    before = _snapshot(model)

    rel = relevance(model, images, labels, first_layer=first_layer, create_graph=True)
    rel.abs().sum().backward()  # exercise the recorded graph too
    model.zero_grad(set_to_none=True)

    _assert_same(before, _snapshot(model))
    calls.clear()
    grads_after = _ce_grads(model, images, labels)
    assert calls == [1]  # the user's hook still works
    for a, b in zip(grads_before, grads_after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_model_restored_after_unsupported_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2))
    before = _snapshot(model)
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        relevance(model, torch.rand(1, 1, 4, 4), torch.tensor([0]))
    _assert_same(before, _snapshot(model))


def test_model_restored_after_failing_forward():
    model = _densenet().train()
    before = _snapshot(model)
    with pytest.raises(RuntimeError):
        lrp_forward(model, torch.rand(2, 3, 32, 32))  # wrong number of channels
    _assert_same(before, _snapshot(model))


def test_training_forward_updates_running_statistics_once():
    torch.manual_seed(1)
    model = _densenet().train()
    reference = _densenet().train()
    reference.load_state_dict(model.state_dict())
    images = torch.rand(2, 1, 32, 32)
    reference(images)
    lrp_forward(model, images)  # a training step's forward pass: statistics updated like a plain forward
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
