"""Exactness of ``isnetflow.lrp.relevance`` against zennit 0.5.1 and the explicit float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.rules import Epsilon, Pass, ZBox
from zennit.types import Linear as ZennitLinear

from isnetflow.lrp import relevance
from isnetflow.nets import build_model
from tests.unit.lrp.lrp_reference import reference_relevance

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


def _assert_exact(actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> None:
    a = torch.as_tensor(actual, dtype=DT)
    e = torch.as_tensor(expected, dtype=DT)
    # Element-wise relative 1e-10, plus an absolute floor far below the map's scale for near-zero pixels.
    torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-13 * float(e.abs().max()))


def _zennit_heatmap(model, images, targets, epsilon, first_layer, low=None, high=None):
    layer_map = [(nn.ReLU, Pass()), (ZennitLinear, Epsilon(epsilon))]
    if first_layer == "zbox":
        first = ZBox(low, high, stabilizer=epsilon)
        composite = SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(ZennitLinear, first)])
    else:
        composite = LayerMapComposite(layer_map=layer_map)
    x = images.clone().requires_grad_(True)
    with composite.context(model) as modified:
        out = modified(x)
        seed = out * nn.functional.one_hot(targets, out.shape[1]).to(out.dtype)
        (heatmap,) = torch.autograd.grad(out, x, seed)
    return heatmap


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).to(DT)


def _mlp_no_relu_between() -> nn.Module:
    # Linear -> Linear without a ReLU (epsilon at every layer output, no fusion) and an unfused Conv.
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.Flatten(),
        nn.Linear(3 * 10 * 10, 9),
        nn.Linear(9, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    ).to(DT)


def _mlp_linear_first() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 3)).to(DT)


@pytest.mark.parametrize("factory", [_conv_net, _mlp_no_relu_between, _mlp_linear_first])
@pytest.mark.parametrize("first_layer", ["epsilon", "zbox"])
@pytest.mark.parametrize("epsilon", [0.01, 0.5])
def test_matches_zennit(factory, first_layer, epsilon):
    torch.manual_seed(0)
    model = factory()
    images = torch.rand(5, 1, 12, 12, dtype=DT)
    targets = torch.tensor([0, 1, 2, 1, 0])
    # zennit's ZBox needs the bounds in the shape of its layer's input (flattened for a Linear first layer).
    ones = torch.ones_like(images) if factory is not _mlp_linear_first else torch.ones(5, 144, dtype=DT)
    expected = _zennit_heatmap(model, images, targets, epsilon, first_layer, 0 * ones, ones)
    actual = relevance(model, images, targets, epsilon=epsilon, first_layer=first_layer)
    assert actual.shape == images.shape
    assert float(actual.abs().max()) > 0
    _assert_exact(actual, expected)


def test_matches_zennit_zbox_tensor_bounds():
    torch.manual_seed(1)
    model = _conv_net()
    images = torch.rand(4, 1, 12, 12, dtype=DT) * 2 - 0.5
    low = torch.full((1, 1, 12, 12), -0.5, dtype=DT) - torch.rand(1, 1, 12, 12, dtype=DT) * 0.1
    high = torch.full((1, 1, 12, 12), 1.5, dtype=DT) + torch.rand(1, 1, 12, 12, dtype=DT) * 0.1
    targets = torch.tensor([2, 0, 1, 1])
    expected = _zennit_heatmap(
        model, images, targets, 0.01, "zbox", low.expand_as(images), high.expand_as(images)
    )
    actual = relevance(model, images, targets, epsilon=0.01, first_layer="zbox", low=low, high=high)
    _assert_exact(actual, expected)


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN parameters/statistics and biases (defaults are gamma=1, beta=0, mean=0, var=1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen, dtype=DT))
                module.bias.copy_(0.3 * torch.randn(module.num_features, generator=gen, dtype=DT))
                module.running_mean.copy_(0.2 * torch.randn(module.num_features, generator=gen, dtype=DT))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(module.num_features, generator=gen, dtype=DT))
            elif isinstance(module, nn.Linear | nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen, dtype=DT))
    return model


def _tiny_densenet() -> nn.Module:
    return DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=3,
        init_features=4,
        growth_rate=2,
        block_config=(2, 2),
        bn_size=2,
    ).to(DT)


def _bn_pool_net() -> nn.Module:
    # Conv(+bias) -> BN -> ReLU (fused), max pool, BN not followed by ReLU, average pools, adaptive pool.
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Conv2d(4, 5, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).to(DT)


def _cnn_small() -> nn.Module:
    return build_model("cnn-small", num_classes=3).to(DT)


CASES = [
    (factory, train, first_layer)
    for factory in (_tiny_densenet, _bn_pool_net)
    for train in (False, True)
    for first_layer in ("epsilon", "zbox")
] + [(_cnn_small, False, "epsilon"), (_cnn_small, True, "zbox")]


@pytest.mark.parametrize(("factory", "train", "first_layer"), CASES)
def test_matches_reference(factory, train, first_layer):
    torch.manual_seed(2)
    model = _randomise(factory(), seed=3).train(train)
    size = 8 if factory is _cnn_small else 16
    images = torch.rand(3, 1, size, size, dtype=DT)
    targets = torch.tensor([0, 2, 1])
    with torch.no_grad():
        logits = model(images)
    ref_logits, expected = reference_relevance(model, images, targets, epsilon=0.01, first_layer=first_layer)
    # The explicit-matrix forward pass reproduces the network (checks the reference itself).
    np.testing.assert_allclose(ref_logits, logits.numpy(), rtol=1e-10, atol=1e-12)
    actual = relevance(model, images, targets, epsilon=0.01, first_layer=first_layer)
    assert torch.isfinite(actual).all()
    assert float(np.abs(expected).max()) > 0
    _assert_exact(actual, expected)


def test_reference_matches_zennit_on_plain_network():
    """The slow reference and zennit agree where zennit applies (cross-check of the oracle)."""
    torch.manual_seed(4)
    model = _conv_net()
    images = torch.rand(2, 1, 12, 12, dtype=DT)
    targets = torch.tensor([1, 2])
    ones = torch.ones_like(images)
    for first_layer in ("epsilon", "zbox"):
        _, ref = reference_relevance(model, images, targets, epsilon=0.01, first_layer=first_layer)
        _assert_exact(ref, _zennit_heatmap(model, images, targets, 0.01, first_layer, 0 * ones, ones))
