"""Heatmap variants of the ISNet family: how the heatmaps of one forward pass are produced.

Variants (registry :data:`VARIANTS`, selected by ``ISNetLossConfig.variant``):

``"selective"`` (Faster ISNet, "Selective ISNet")
    One map per sample explaining the softmax log-odds
    ``eta_c = log(p_c + eps) - log(1 - p_c + eps)`` of the class with the *lowest* logit (the authors'
    choice in ``ISNetFlex``: ``indices = argmin(logits)``). As in the authors' LRP-Flex, the relevance at
    the logits is the gradient ``d eta_c / d z`` -- for two classes and ``eps = 0`` exactly
    ``z_c - z_other``, the logit difference -- injected at the output layer's unstabilised output
    (``at="raw"``), so below the logits the usual LRP rules apply. This equals the authors' log-sum-exp
    based rule ``R_cc' = Z_cc' exp(-Z_cc') / sum exp(-Z_cc'')`` through the difference layer up to
    stabilisers. Needs a model whose last layer is Linear (or Conv).
``"stochastic"`` (Stochastic ISNet)
    One map per sample for the logit of a randomly chosen class: with probability
    ``stochastic_anchor_prob`` (0.5) the anchor (the label by default, the arg-max logit as in the
    authors' LRP-Flex with ``stochastic_anchor="highest"``), otherwise a uniformly drawn other class.
``"all"`` (original ISNet)
    One map per class (``K`` relevance passes over the same forward pass).
``"standard"``
    No heatmaps: plain cross-entropy training (also what any variant does when ``P == 0``).

Every variant explains the logits of one forward pass which also provides the cross-entropy logits, so a
training step costs one forward pass, one backward pass per map with ``create_graph=True`` and one final
backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isnetflow.lrp.core import LRPTrace, lrp_forward

if TYPE_CHECKING:
    from isnetflow.isnet.objective import ISNetLossConfig

__all__ = [
    "VARIANTS",
    "HeatmapVariant",
    "explain_batch",
    "selective_seed",
    "stochastic_classes",
]

_HALF = (torch.float16, torch.bfloat16)

HeatmapBuilder = Callable[[LRPTrace, Tensor, "ISNetLossConfig", torch.Generator | None, bool], Tensor]


@dataclass(frozen=True)
class HeatmapVariant:
    """A registered way of producing ISNet heatmaps.

    ``build(trace, labels, config, generator, create_graph)`` returns ``(B, K, C, H, W)`` maps;
    ``build is None`` means no heatmaps (standard training).
    """

    name: str
    build: HeatmapBuilder | None
    maps_per_sample: str


def selective_seed(logits: Tensor, classes: Tensor, eps: float) -> Tensor:
    """Gradient ``d eta / d logits`` of ``eta = log(p_c + eps) - log(1 - p_c + eps)``, ``p = softmax``.

    ``g_k = (1 / (p_c + eps) + 1 / (1 - p_c + eps)) * p_c * (delta_ck - p_k)``; differentiable.
    """
    p = torch.softmax(logits, dim=1)
    p_c = p.gather(1, classes[:, None])
    scale = (1.0 / (p_c + eps) + 1.0 / (1.0 - p_c + eps)) * p_c
    onehot = F.one_hot(classes, logits.shape[1]).to(logits.dtype)
    return scale * (onehot - p)


def stochastic_classes(
    logits: Tensor,
    labels: Tensor,
    *,
    anchor: str = "label",
    anchor_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample class for the stochastic variant (anchor with ``anchor_prob``, else another class)."""
    batch, num_classes = logits.shape
    anchors = labels if anchor == "label" else logits.detach().argmax(1)
    keep = torch.rand(batch, generator=generator) < anchor_prob
    other = torch.randint(0, max(num_classes - 1, 1), (batch,), generator=generator)
    anchors_cpu = anchors.detach().cpu()
    other = other + (other >= anchors_cpu).long()  # uniform over the classes != anchor
    chosen = torch.where(keep | (num_classes == 1), anchors_cpu, other)
    return chosen.to(logits.device)


def _build_selective(
    trace: LRPTrace, labels: Tensor, config: ISNetLossConfig, generator: torch.Generator | None, graph: bool
) -> Tensor:
    classes = trace.logits.detach().argmin(1)
    seed = selective_seed(trace.logits, classes, config.selective_eps)
    return trace.relevance(seed, at="raw", create_graph=graph).unsqueeze(1)


def _build_stochastic(
    trace: LRPTrace, labels: Tensor, config: ISNetLossConfig, generator: torch.Generator | None, graph: bool
) -> Tensor:
    classes = stochastic_classes(
        trace.logits,
        labels,
        anchor=config.stochastic_anchor,
        anchor_prob=config.stochastic_anchor_prob,
        generator=generator,
    )
    seed = F.one_hot(classes, trace.logits.shape[1]).to(trace.logits.dtype)
    return trace.relevance(seed, create_graph=graph).unsqueeze(1)


def _build_all(
    trace: LRPTrace, labels: Tensor, config: ISNetLossConfig, generator: torch.Generator | None, graph: bool
) -> Tensor:
    num_classes = trace.logits.shape[1]
    maps = []
    for k in range(num_classes):
        seed = torch.zeros_like(trace.logits)
        seed[:, k] = 1
        maps.append(trace.relevance(seed, create_graph=graph))
    return torch.stack(maps, dim=1)


VARIANTS: dict[str, HeatmapVariant] = {
    "selective": HeatmapVariant("selective", _build_selective, "1 (softmax log-odds of the lowest logit)"),
    "stochastic": HeatmapVariant("stochastic", _build_stochastic, "1 (logit of a random class)"),
    "all": HeatmapVariant("all", _build_all, "num_classes (every logit)"),
    "standard": HeatmapVariant("standard", None, "0 (no heatmaps)"),
}
"""Registry of heatmap variants by name."""


def _variant(name: str) -> HeatmapVariant:
    if name not in VARIANTS:
        raise KeyError(f"unknown ISNet variant {name!r}; available: {sorted(VARIANTS)}")
    return VARIANTS[name]


def explain_batch(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: ISNetLossConfig,
    *,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
    allow_autocast: bool = False,
) -> tuple[Tensor, Tensor]:
    """One instrumented forward pass; return the logits and the variant's heatmaps ``(B, K, C, H, W)``.

    Used by :func:`isnetflow.isnet.isnet_objective` (``create_graph=True``) and for collecting relevance
    statistics (:class:`~isnetflow.isnet.loss.ForegroundRangeEstimator`) or explanations
    (``create_graph=False``: detached maps). The forward pass is a normal one (in training mode it updates
    BN running statistics).

    The pass runs in float32 with autocast disabled even inside an enclosing ``torch.autocast`` region:
    under bf16 autocast the heatmaps, and even more the ISNet loss gradient, move far from their float32
    values (``isnetflow bench amp`` measures it; docs/training.md), so mixed precision is not numerically
    safe for the heatmap loss. ``allow_autocast=True`` (measurements only) lifts the guard.
    """
    variant = _variant(config.variant)
    if variant.build is None:
        raise ValueError("the 'standard' variant produces no heatmaps")
    guard = (
        contextlib.nullcontext()
        if allow_autocast
        else torch.autocast(device_type=images.device.type, enabled=False)
    )
    with guard:
        trace = lrp_forward(
            model,
            images if allow_autocast or images.dtype not in _HALF else images.float(),
            epsilon=config.epsilon,
            first_layer=config.first_layer,
            low=config.low,
            high=config.high,
            bn_stats_grad=config.bn_stats_grad,
        )
        maps = variant.build(trace, labels, config, generator, create_graph)
    return trace.logits, maps if create_graph else maps.detach()
