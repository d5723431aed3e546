"""ISNet heatmap variants and the one-forward-pass objective."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isnetflow.isnet import (
    VARIANTS,
    ISNetLossConfig,
    explain_batch,
    heatmap_loss,
    isnet_objective,
    selective_seed,
    stochastic_classes,
)
from isnetflow.lrp import relevance, stabilize
from isnetflow.nets import build_model

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


def _net(classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, classes),
    ).to(DT)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn = model[1]
        bn.weight.copy_(0.5 + torch.rand(3, generator=gen, dtype=DT))
        bn.bias.copy_(0.2 * torch.randn(3, generator=gen, dtype=DT))
        bn.running_mean.copy_(0.2 * torch.randn(3, generator=gen, dtype=DT))
        bn.running_var.copy_(0.5 + torch.rand(3, generator=gen, dtype=DT))
        model[-1].weight.mul_(5.0)
    return model.eval()


def _batch(n: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(n, 1, size, size, dtype=DT, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    masks = torch.zeros(n, 1, size, size, dtype=DT)
    masks[:, :, 2:6, 1:7] = 1
    return images, labels, masks


def test_registry():
    assert set(VARIANTS) == {"selective", "stochastic", "all", "standard"}
    assert VARIANTS["standard"].build is None
    with pytest.raises(ValueError, match="unknown ISNet variant"):
        ISNetLossConfig(variant="lasso")


def test_selective_seed_is_the_gradient_of_the_log_odds():
    logits = torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    classes = torch.tensor([0, 3, 1, 2, 2])
    eps = 0.01
    p = torch.softmax(logits, 1).gather(1, classes[:, None])
    eta = torch.log(p + eps) - torch.log(1 - p + eps)
    (expected,) = torch.autograd.grad(eta.sum(), logits)
    torch.testing.assert_close(selective_seed(logits, classes, eps), expected, rtol=1e-12, atol=1e-14)
    # Two classes, eps = 0: the log-odds is the logit difference, its gradient is e_c - e_other.
    two = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=DT)
    seed = selective_seed(two, torch.tensor([1, 0]), 0.0)
    torch.testing.assert_close(seed, torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=DT))


def test_selective_heatmap_explains_the_logit_difference_of_the_lowest_class():
    """Two classes, eps = 0: the map equals LRP of ``z_c - z_other`` (c = arg-min logit) computed by an
    explicit difference network, up to that network's own output stabiliser."""
    model = _net()
    images, labels, _ = _batch()
    cfg = ISNetLossConfig(variant="selective", selective_eps=0.0, epsilon=0.01)
    logits, maps = explain_batch(model, images, labels, cfg)
    assert maps.shape == (4, 1, 1, 8, 8)

    diff = copy.deepcopy(model)
    last = model[-1]
    head = nn.Linear(16, 2).to(DT)
    with torch.no_grad():
        head.weight.copy_(torch.stack([last.weight[0] - last.weight[1], last.weight[1] - last.weight[0]]))
        head.bias.copy_(torch.stack([last.bias[0] - last.bias[1], last.bias[1] - last.bias[0]]))
    diff[-1] = head
    lowest = logits.argmin(1)
    d = (logits.gather(1, lowest[:, None]) - logits.gather(1, 1 - lowest[:, None])).squeeze(1).detach()
    reference = relevance(diff, images, lowest, epsilon=0.01, first_layer="zbox")
    expected = reference * (stabilize(d, 0.01) / d)[:, None, None, None]
    torch.testing.assert_close(maps[:, 0], expected, rtol=1e-10, atol=1e-14)


def test_stochastic_classes():
    logits = torch.tensor([[0.0, 1.0, 2.0]] * 2000)
    labels = torch.zeros(2000, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    chosen = stochastic_classes(logits, labels, anchor="label", anchor_prob=0.5, generator=gen)
    share = float((chosen == 0).double().mean())
    assert 0.45 < share < 0.55  # anchor (the label) about half of the time
    assert set(chosen.tolist()) == {0, 1, 2}
    others = chosen[chosen != 0]
    assert 0.4 < float((others == 1).double().mean()) < 0.6  # other classes drawn uniformly
    always = stochastic_classes(logits, labels, anchor_prob=1.0, generator=gen)
    assert bool((always == 0).all())
    never = stochastic_classes(logits, labels, anchor="highest", anchor_prob=0.0, generator=gen)
    assert bool((never != 2).all())  # arg-max logit is class 2


def test_stochastic_and_all_maps_are_logit_relevances():
    model = _net()
    images, labels, _ = _batch()
    cfg = ISNetLossConfig(variant="stochastic")
    _, maps = explain_batch(model, images, labels, cfg, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(images)
    classes = stochastic_classes(logits, labels, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(maps[:, 0], relevance(model, images, classes), rtol=1e-12, atol=1e-15)

    _, all_maps = explain_batch(model, images, labels, ISNetLossConfig(variant="all"))
    assert all_maps.shape == (4, 2, 1, 8, 8)
    for k in range(2):
        expected = relevance(model, images, torch.full((4,), k))
        torch.testing.assert_close(all_maps[:, k], expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="standard"):
        explain_batch(model, images, labels, ISNetLossConfig(variant="standard"))


@pytest.mark.parametrize("cfg", [ISNetLossConfig(variant="standard"), ISNetLossConfig(variant="all", P=0.0)])
def test_standard_training_computes_no_heatmap(cfg):
    model = _net()
    images, labels, masks = _batch()
    out = isnet_objective(model, images, labels, masks, cfg)
    assert out.heatmaps is None
    ce = F.cross_entropy(model(images), labels)
    torch.testing.assert_close(out.loss, ce)
    torch.testing.assert_close(out.cross_entropy, ce)
    assert float(out.background) == 0.0 and float(out.foreground) == 0.0


@pytest.mark.parametrize("variant", ["selective", "stochastic", "all"])
def test_objective_combines_terms(variant):
    model = _net()
    images, labels, masks = _batch()
    cfg = ISNetLossConfig(variant=variant, P=0.6, A=1.5, B=2.0, C1=0.01, C2=0.05)
    out = isnet_objective(model, images, labels, masks, cfg, generator=torch.Generator().manual_seed(0))
    assert out.heatmaps is not None and out.heatmaps.shape[1] == (2 if variant == "all" else 1)
    torch.testing.assert_close(out.logits, model(images))
    bg, fg = heatmap_loss(out.heatmaps, masks, cfg)
    expected = 0.4 * F.cross_entropy(model(images), labels) + 0.6 * (1.5 * bg + 2.0 * fg)
    torch.testing.assert_close(out.loss, expected)
    assert out.background.item() > 0 and out.foreground.item() > 0


def _fd_check(fn: Callable[[], torch.Tensor], tensors: dict[str, torch.Tensor], entries: int = 3) -> None:
    names = list(tensors)
    grads = torch.autograd.grad(fn(), [tensors[n] for n in names])
    scale = max(float(g.abs().max()) for g in grads)
    assert scale > 0
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for name, grad in zip(names, grads, strict=True):
        flat = tensors[name].data.view(-1)
        picks = torch.randperm(flat.numel(), generator=gen)[:entries].tolist()
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


@pytest.mark.parametrize("variant", ["selective", "stochastic", "all"])
def test_objective_gradient_matches_finite_differences(variant):
    model = _net()
    images, labels, masks = _batch()
    # C1/C2 chosen so that the in-mask relevance mass lies outside [C1, C2] (both branches active).
    cfg = ISNetLossConfig(variant=variant, C1=0.01, C2=0.02, d=0.9)

    def loss() -> torch.Tensor:
        gen = torch.Generator().manual_seed(7)  # same stochastic class choice at every evaluation
        return isnet_objective(model, images, labels, masks, cfg, generator=gen).loss

    _fd_check(loss, dict(model.named_parameters()))


def test_exact_batch_statistics_option_in_training_mode():
    """With ``bn_stats_grad=True`` the objective's gradient is exact for training-mode batch norm too."""
    model = _net().train()
    images, labels, masks = _batch()
    cfg = ISNetLossConfig(C1=0.01, C2=0.02, bn_stats_grad=True)
    buffers = {name: buf.clone() for name, buf in model.named_buffers()}

    def loss() -> torch.Tensor:
        with torch.no_grad():  # every evaluation starts from the same running statistics
            for name, buf in model.named_buffers():
                buf.copy_(buffers[name])
        return isnet_objective(model, images, labels, masks, cfg).loss

    _fd_check(loss, dict(model.named_parameters()))


def test_default_training_gradient_matches_its_own_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gradient training actually uses: training-mode batch norm with ``bn_stats_grad=False`` (the
    default), where the LRP's batch-norm factor ``gamma / sqrt(var + eps)`` treats the batch variance as
    a constant. Its oracle: finite differences of the same objective with that variance frozen at the
    current batch's value (the network's own forward keeps live batch statistics)."""
    from isnetflow.lrp import core

    model = _net().train()
    images, labels, masks = _batch()
    cfg = ISNetLossConfig(C1=0.01, C2=0.02)
    assert cfg.bn_stats_grad is False  # the training default
    buffers = {name: buf.clone() for name, buf in model.named_buffers()}
    params = dict(model.named_parameters())

    def loss() -> torch.Tensor:
        with torch.no_grad():  # every evaluation starts from the same running statistics
            for name, buf in model.named_buffers():
                buf.copy_(buffers[name])
        return isnet_objective(model, images, labels, masks, cfg).loss

    default_value = loss()
    default_grads = torch.autograd.grad(default_value, list(params.values()))

    # the batch variance each batch-norm layer sees at the current parameters
    frozen: dict[int, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        frozen[id(module)] = torch.rsqrt(x.var(dim=[0, 2, 3], unbiased=False) + module.eps)

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    handles = [m.register_forward_pre_hook(record) for m in bns]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name])

    def frozen_scale(
        module: nn.Module, x: torch.Tensor, output: torch.Tensor, stats_grad: bool
    ) -> torch.Tensor:
        assert module.training and not stats_grad
        return (module.weight * frozen[id(module)]).reshape(1, -1, 1, 1)

    monkeypatch.setattr(core, "_bn_scale", frozen_scale)
    frozen_value = loss()
    torch.testing.assert_close(frozen_value, default_value, rtol=1e-12, atol=0)
    # the default's gradient is the frozen-variance objective's gradient...
    for a, b in zip(torch.autograd.grad(frozen_value, list(params.values())), default_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # ...which finite differences confirm, entry by entry
    _fd_check(loss, params)
    # and it is not the exact gradient (live batch variance everywhere): the oracle can tell them apart
    exact = ISNetLossConfig(C1=0.01, C2=0.02, bn_stats_grad=True)
    monkeypatch.undo()
    for name, buf in model.named_buffers():
        buf.data.copy_(buffers[name])
    exact_grads = torch.autograd.grad(
        isnet_objective(model, images, labels, masks, exact).loss, list(params.values())
    )
    assert any(not torch.allclose(a, b, rtol=1e-6) for a, b in zip(exact_grads, default_grads, strict=True))


def test_loss_through_public_relevance_matches_finite_differences():
    model = _net()
    images, labels, masks = _batch()
    cfg = ISNetLossConfig(C1=0.01, C2=0.02)

    def loss() -> torch.Tensor:
        heatmaps = relevance(model, images, labels, create_graph=True)
        bg, fg = heatmap_loss(heatmaps, masks, cfg)
        return bg + 3 * fg

    _fd_check(loss, dict(model.named_parameters()))


def test_objective_on_densenet_small_trains():
    torch.manual_seed(0)
    model = build_model("densenet-small", num_classes=2).train()
    images = torch.rand(2, 1, 32, 32)
    labels = torch.tensor([0, 1])
    masks = torch.zeros(2, 32, 32)
    masks[:, 8:24, 4:28] = 1
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = isnet_objective(model, images, labels, masks, ISNetLossConfig())
    assert out.heatmaps is not None and out.heatmaps.shape == (2, 1, 1, 32, 32)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()


def test_heatmap_pass_ignores_enclosing_autocast() -> None:
    """The LRP pass is float32 even inside bf16 autocast: same loss, heatmaps and gradient as without."""
    from isnetflow.bench.lrp import amp_check

    result = amp_check("cnn-small", batch=4, image_size=32, device="cpu", dtype=torch.bfloat16)
    assert result["guarded_loss_rel_err"] == 0.0
    assert result["guarded_heatmap_rel_err"] == 0.0
    assert result["guarded_grad_rel_err"] == 0.0
    # ...and without the guard bf16 visibly moves the heatmaps: the guard is doing something.
    assert result["unguarded_heatmap_rel_err"] > 1e-3
