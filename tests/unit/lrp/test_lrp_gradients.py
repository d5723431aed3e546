"""Differentiability of the relevance with respect to every parameter tensor and the input (float64)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet
from torch import nn

from isnetflow.lrp import lrp_forward, relevance

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


def finite_difference_check(
    fn: Callable[[], torch.Tensor],
    tensors: dict[str, torch.Tensor],
    *,
    entries: int = 4,
    h: float = 1e-6,
    seed: int = 0,
) -> None:
    """Compare autograd gradients of ``fn()`` with central differences on ``entries`` random elements of
    every tensor (all elements for smaller tensors)."""
    names = list(tensors)
    grads = torch.autograd.grad(fn(), [tensors[n] for n in names])
    scale = max(float(g.abs().max()) for g in grads)
    assert scale > 0
    gen = torch.Generator().manual_seed(seed)
    for name, grad in zip(names, grads, strict=True):
        flat = tensors[name].data.view(-1)
        count = flat.numel()
        picks = range(count) if count <= entries else torch.randperm(count, generator=gen)[:entries].tolist()
        for i in picks:
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + h
                plus = float(fn())
                flat[i] = old - h
                minus = float(fn())
                flat[i] = old
            fd = (plus - minus) / (2 * h)
            analytic = float(grad.reshape(-1)[i])
            assert abs(fd - analytic) <= 1e-6 * abs(fd) + 1e-7 * scale, (name, i, fd, analytic)


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen, dtype=DT))
                module.bias.copy_(0.3 * torch.randn(n, generator=gen, dtype=DT))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen, dtype=DT))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen, dtype=DT))
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen, dtype=DT))
    return model


def _plain_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).to(DT)


def _bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).to(DT)


def _tiny_densenet() -> nn.Module:
    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=3, init_features=3, growth_rate=2, block_config=(1, 2)
    )
    return net.to(DT)


CASES = [
    ("plain", _plain_net, False, "epsilon", False),
    ("plain", _plain_net, False, "zbox", False),
    ("bn-eval", _bn_net, False, "zbox", False),
    ("bn-eval", _bn_net, False, "epsilon", False),
    ("bn-train-exact", _bn_net, True, "zbox", True),
    ("densenet-eval", _tiny_densenet, False, "zbox", False),
    ("densenet-train-exact", _tiny_densenet, True, "epsilon", True),
]


@pytest.mark.parametrize(("name", "factory", "train", "first_layer", "stats_grad"), CASES)
def test_relevance_gradient_matches_finite_differences(name, factory, train, first_layer, stats_grad):
    torch.manual_seed(0)
    model = _randomise_bn(factory(), seed=1).train(train)
    size = 16 if factory is _tiny_densenet else 8
    images = torch.rand(3, 1, size, size, dtype=DT, requires_grad=True)
    targets = torch.tensor([0, 2, 1])
    weights = torch.randn(images.shape, dtype=DT, generator=torch.Generator().manual_seed(2))
    seed = F.one_hot(targets, 3).to(DT)

    def objective() -> torch.Tensor:
        trace = lrp_forward(
            model, images, first_layer=first_layer, bn_stats_grad=stats_grad, preserve_buffers=True
        )
        return (trace.relevance(seed, create_graph=True) * weights).sum()

    tensors = dict(model.named_parameters())
    tensors["images"] = images
    finite_difference_check(objective, tensors)


def test_public_relevance_is_differentiable():
    torch.manual_seed(3)
    model = _bn_net().eval()
    images = torch.rand(2, 1, 8, 8, dtype=DT)
    targets = torch.tensor([1, 0])
    weights = torch.randn(images.shape, dtype=DT)
    finite_difference_check(
        lambda: (relevance(model, images, targets, create_graph=True) * weights).sum(),
        dict(model.named_parameters()),
    )
    detached = relevance(model, images, targets)
    assert detached.grad_fn is None and not detached.requires_grad


def test_detached_batch_statistics_only_change_the_gradient():
    torch.manual_seed(4)
    model = _randomise_bn(_bn_net(), seed=5).train()
    images = torch.rand(4, 1, 8, 8, dtype=DT)
    seed = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).to(DT)
    weights = torch.randn(images.shape, dtype=DT)
    params = list(model.parameters())
    results = {}
    for stats_grad in (False, True):
        trace = lrp_forward(model, images, bn_stats_grad=stats_grad, preserve_buffers=True)
        rel = trace.relevance(seed, create_graph=True)
        results[stats_grad] = (rel.detach(), torch.autograd.grad((rel * weights).sum(), params))
    # Same values (up to rounding: the detached path reuses the variance saved by the BN node).
    torch.testing.assert_close(results[False][0], results[True][0], rtol=1e-10, atol=1e-15)
    # The variance only enters through the BN factors: gradients differ (detached statistics)...
    assert any(not torch.allclose(a, b) for a, b in zip(results[False][1], results[True][1], strict=True))
    # ...while in eval mode there are no batch statistics and both settings coincide exactly.
    model.eval()
    grads = []
    for stats_grad in (False, True):
        rel = lrp_forward(model, images, bn_stats_grad=stats_grad).relevance(seed, create_graph=True)
        grads.append(torch.autograd.grad((rel * weights).sum(), params))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_instrumented_forward_gives_ordinary_cross_entropy_gradients(train):
    torch.manual_seed(6)
    model = _randomise_bn(_tiny_densenet(), seed=7).train(train)
    images = torch.rand(4, 1, 16, 16, dtype=DT)
    labels = torch.tensor([0, 1, 2, 1])
    params = list(model.parameters())
    buffers_before = {k: v.clone() for k, v in model.state_dict().items()}

    plain_logits = model(images)
    plain = torch.autograd.grad(F.cross_entropy(plain_logits, labels), params)
    buffers_plain = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(buffers_before)

    trace = lrp_forward(model, images)
    torch.testing.assert_close(trace.logits, plain_logits, rtol=0, atol=0)
    traced = torch.autograd.grad(F.cross_entropy(trace.logits, labels), params)
    for a, b in zip(plain, traced, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # One training forward pass updates the BN running statistics exactly like a plain one.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, buffers_plain[key], rtol=0, atol=0)


def test_single_forward_serves_cross_entropy_and_relevance_loss():
    """Backward of CE(logits) + L(R) over one traced forward == the two gradients computed separately."""
    torch.manual_seed(8)
    model = _randomise_bn(_bn_net(), seed=9).eval()
    images = torch.rand(3, 1, 8, 8, dtype=DT)
    labels = torch.tensor([2, 0, 1])
    weights = torch.randn(images.shape, dtype=DT)
    params = list(model.parameters())

    trace = lrp_forward(model, images)
    rel = trace.relevance(F.one_hot(labels, 3).to(DT), create_graph=True)
    combined = torch.autograd.grad(F.cross_entropy(trace.logits, labels) + (rel * weights).sum(), params)

    ce = torch.autograd.grad(F.cross_entropy(model(images), labels), params)
    lrp = torch.autograd.grad((relevance(model, images, labels, create_graph=True) * weights).sum(), params)
    for c, a, b in zip(combined, ce, lrp, strict=True):
        torch.testing.assert_close(c, a + b, rtol=1e-12, atol=1e-14)
