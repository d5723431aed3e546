"""Relevance conservation: for bias-free networks the input relevance sums to the explained logit.

With the epsilon rule each affine layer keeps ``sum(R_in) = sum_k R_k * z_k / stab(z_k)``; a unit ``k``
therefore loses at most ``|c_k| * epsilon`` relevance (``c_k`` its relevance per unit activation), so the
discrepancy shrinks linearly with epsilon (measured: about ``3e-10`` relative at ``epsilon = 1e-12`` for
these networks). Stated tolerance, per sample, with ``epsilon = 1e-12``:
``|sum(R) - logit| <= 1e-8 * |logit| + 1e-12``. Max pooling, ReLU, concatenation and flatten
conserve exactly. The z^B rule conserves at the input layer even when that layer has a bias (the bias
is not part of its denominator ``W x - W+ l - W- h``).
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn

from isnetflow.lrp import relevance

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64
EPS = 1e-12


def _check_conserved(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, first_layer: str) -> None:
    with torch.no_grad():
        logits = model(images).gather(1, targets[:, None]).squeeze(1)
    rel = relevance(model, images, targets, epsilon=EPS, first_layer=first_layer)
    totals = rel.sum(dim=tuple(range(1, rel.dim())))
    assert bool((logits.abs() > 1e-3).all())  # non-trivial logits
    torch.testing.assert_close(totals, logits, rtol=1e-8, atol=1e-12)


def _bias_free_cnn(first_bias: bool = False) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=first_bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3, bias=False),
    ).to(DT)
    with torch.no_grad():
        model[-1].weight.mul_(30.0)  # logits of order one despite the average pools
    return model


def _bias_free_densenet() -> nn.Module:
    """MONAI DenseNet in eval mode with beta = 0 and running mean 0 (BN is then linear), bias-free head."""
    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=3, block_config=(2, 2)
    ).to(DT)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen, dtype=DT))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen, dtype=DT))
                module.bias.zero_()
                module.running_mean.zero_()
        net.class_layers.out.bias.zero_()
    return net.eval()


@pytest.mark.parametrize("first_layer", ["epsilon", "zbox"])
@pytest.mark.parametrize("factory", [_bias_free_cnn, _bias_free_densenet])
def test_bias_free_networks_conserve_relevance(factory, first_layer):
    torch.manual_seed(0)
    model = factory()
    images = torch.rand(4, 1, 16, 16, dtype=DT)
    _check_conserved(model, images, torch.tensor([0, 1, 2, 0]), first_layer)


def test_zbox_conserves_despite_an_input_layer_bias_and_epsilon_does_not():
    torch.manual_seed(1)
    model = _bias_free_cnn(first_bias=True)
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.3, -0.2, 0.25, 0.4], dtype=DT))
    images = torch.rand(3, 1, 16, 16, dtype=DT)
    targets = torch.tensor([2, 1, 0])
    _check_conserved(model, images, targets, "zbox")
    with pytest.raises(AssertionError):  # the bias absorbs relevance under the epsilon rule
        _check_conserved(model, images, targets, "epsilon")


def test_biases_break_conservation_in_general():
    """Sanity check that the conservation test can fail: with biases the sums differ noticeably."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    with pytest.raises(AssertionError):
        _check_conserved(model, torch.rand(2, 1, 8, 8, dtype=DT), torch.tensor([0, 1]), "epsilon")
