"""The ISNet objective as one object: its configuration, its named parts, and one training step.

The objective of a batch is a sum of named, weighted *parts* (:class:`ISNetOutput.parts`)::

    cross_entropy = (1 - P) * CE
    heatmap       = P * (A * L_bg + B * L_fg)
    loss          = sum of the parts

The parts in :data:`CLASSIFIER_PARTS` drive the classifier; every other part is a *relevance* part. One
training step (:func:`isnet_step`) differentiates the two groups separately, optionally removes the part of
the relevance gradient that opposes the classifier gradient (``grad_projection``), caps its norm at
``grad_balance`` times the classifier gradient's norm, scales it by the heatmap ramp, and sets ``.grad``. A
part added to the objective is therefore trained without touching the loop; with no cap and no projection
the step's gradient is exactly the gradient of ``loss``. It is reported by name too: :func:`part_values`
gives every part's values under its history keys (:data:`PART_HISTORY_KEYS`), which the training steps
and the validation record, so a new part reaches the training history and MLflow without touching them.

:class:`ISNetLossConfig` is the ``train.heatmap`` settings (:class:`isnetflow.config.HeatmapLossConfig`,
the one set of defaults) with the foreground range ``C1``/``C2`` resolved to numbers.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Self

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor, nn

from isnetflow.config import HeatmapLossConfig
from isnetflow.isnet.loss import background_loss, foreground_loss
from isnetflow.isnet.variants import VARIANTS, explain_batch

__all__ = [
    "CLASSIFIER_PARTS",
    "PART_HISTORY_KEYS",
    "ISNetLossConfig",
    "ISNetOutput",
    "StepDiagnostics",
    "heatmap_loss",
    "isnet_loss",
    "isnet_objective",
    "isnet_step",
    "loss_config_from_settings",
    "part_values",
    "step_gradients",
]

_SETTINGS = HeatmapLossConfig.model_fields

CLASSIFIER_PARTS = frozenset({"cross_entropy", "distillation"})
"""Parts of the objective that train the classifier (the cross-entropy, and the lungs-only teacher's
distillation part that ``train.distill`` adds); every other part is a relevance part, whose gradient the
step projects and caps against theirs (:func:`step_gradients`)."""

PART_HISTORY_KEYS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "cross_entropy": MappingProxyType({"ce": "cross_entropy"}),
        "heatmap": MappingProxyType({"background": "background", "foreground": "foreground"}),
    }
)
"""How the training history names each part of the objective (the one mapping; :func:`part_values`).

A part listed here is reported by the unweighted terms it is made of (history key -> name in
:attr:`ISNetOutput.terms`): the cross-entropy as ``ce``, the heatmap part as ``background`` (``L_bg``) and
``foreground`` (``L_fg``), so the curves read the same whatever ``P``, ``A`` and ``B`` are. Every other
part (``distillation``, and any part added to the objective) is reported by its weighted value under its
own name. The training records them as ``train_<key>``, the validation as ``val_<key>``."""

AllReduce = Callable[[list[Tensor]], list[Tensor]]
"""Averages a list of tensors over the data-parallel ranks (``DistContext.all_reduce_mean``)."""


class ISNetLossConfig(HeatmapLossConfig):
    """The ISNet objective's configuration: the ``train.heatmap`` settings with ``C1``/``C2`` resolved.

    Frozen, and built from the settings by :func:`loss_config_from_settings` in the training, its
    validation and the benchmarks; constructed directly only with overrides of the settings' defaults
    (benchmarks, tests). ``P`` may be 1 here (heatmap loss only), and ``variant`` may be ``"standard"``
    (no heatmaps: plain cross-entropy).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    P: float = Field(_SETTINGS["P"].default, ge=0.0, le=1.0, description="weight of the heatmap loss")
    C1: float = Field(_SETTINGS["C1"].default, gt=0.0, description="lower bound of the in-lung relevance S")
    C2: float = Field(_SETTINGS["C2"].default, gt=0.0, description="upper bound of the in-lung relevance S")

    @model_validator(mode="after")
    def _known_variant(self) -> Self:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ISNet variant {self.variant!r}; available: {sorted(VARIANTS)}")
        return self


def loss_config_from_settings(settings: HeatmapLossConfig, c1: float, c2: float) -> ISNetLossConfig:
    """The objective of the ``train.heatmap`` settings with the foreground range ``c1, c2``.

    The one place where settings become a loss configuration (training, validation, benchmarks). Refuses
    a variant that produces no heatmaps (``"standard"``: use ``train.mode standard``).
    """
    variant = VARIANTS.get(settings.variant)
    if variant is None or variant.build is None:
        allowed = sorted(name for name, v in VARIANTS.items() if v.build is not None)
        raise ValueError(
            f"unknown heatmap variant {settings.variant!r}; choose one of {allowed} (or train.mode standard)"
        )
    return ISNetLossConfig(**{**settings.model_dump(), "C1": c1, "C2": c2})


@dataclass(frozen=True)
class ISNetOutput:
    """The objective of one batch: its named weighted parts, the unweighted terms, logits and heatmaps.

    ``parts`` sum to :attr:`loss`; ``terms`` are ``cross_entropy``, ``background`` (``L_bg``) and
    ``foreground`` (``L_fg``), batch means, zero when no heatmaps were computed. ``heatmaps`` is ``None``
    for plain cross-entropy (variant ``"standard"`` or ``P == 0``).
    """

    parts: Mapping[str, Tensor]
    terms: Mapping[str, Tensor]
    logits: Tensor | None = None
    heatmaps: Tensor | None = None
    loss: Tensor = field(init=False)

    def __post_init__(self) -> None:
        """Set :attr:`loss` to the sum of the parts."""
        object.__setattr__(self, "loss", functools.reduce(operator.add, self.parts.values()))

    def with_parts(self, parts: Mapping[str, Tensor]) -> ISNetOutput:
        """This output with more parts (a part of the same name is replaced); the loss is their new sum."""
        return ISNetOutput({**self.parts, **parts}, self.terms, self.logits, self.heatmaps)

    @property
    def cross_entropy(self) -> Tensor:
        """The unweighted cross-entropy."""
        return self.terms["cross_entropy"]

    @property
    def background(self) -> Tensor:
        """The unweighted background term ``L_bg``."""
        return self.terms["background"]

    @property
    def foreground(self) -> Tensor:
        """The unweighted foreground term ``L_fg``."""
        return self.terms["foreground"]

    @property
    def heatmap(self) -> Tensor:
        """``A * L_bg + B * L_fg``, before the weight ``P`` (zero without heatmaps)."""
        return self.terms["heatmap"]


def part_values(out: ISNetOutput) -> dict[str, dict[str, float]]:
    """The values that report each part of ``out``: ``{part: {history key: value}}`` in the parts' order.

    A part of :data:`PART_HISTORY_KEYS` gives its unweighted terms under their history keys; any other
    part its weighted value under its own name. Floats, detached from the graph.
    """
    values: dict[str, dict[str, float]] = {}
    for name, part in out.parts.items():
        keys = PART_HISTORY_KEYS.get(name)
        if keys is None:
            values[name] = {name: float(part.detach())}
        else:
            values[name] = {key: float(out.terms[term].detach()) for key, term in keys.items()}
    return values


def heatmap_loss(heatmaps: Tensor, masks: Tensor, config: ISNetLossConfig) -> tuple[Tensor, Tensor]:
    """Batch-mean background and foreground terms ``(L_bg, L_fg)`` for ``config``."""
    bg = background_loss(heatmaps, masks, d=config.d, E=config.E, norm=config.norm).mean()
    fg = foreground_loss(heatmaps, masks, C1=config.C1, C2=config.C2).mean()
    return bg, fg


def isnet_loss(
    logits: Tensor,
    labels: Tensor,
    heatmaps: Tensor | None,
    masks: Tensor | None,
    config: ISNetLossConfig,
    *,
    class_weight: Tensor | None = None,
) -> ISNetOutput:
    """The objective's parts from logits and heatmaps: ``(1 - P) CE`` and ``P (A L_bg + B L_fg)``.

    ``class_weight`` is passed to :func:`torch.nn.functional.cross_entropy` (inverse class frequencies in
    training). With ``heatmaps is None`` (standard training) the only part is the unweighted cross-entropy.
    """
    ce = F.cross_entropy(logits, labels, weight=class_weight)
    if heatmaps is None:
        zero = ce.new_zeros(())
        terms = {"cross_entropy": ce, "background": zero, "foreground": zero, "heatmap": zero}
        return ISNetOutput(parts={"cross_entropy": ce}, terms=terms, logits=logits)
    if masks is None:
        raise ValueError("masks are required when heatmaps are given")
    bg, fg = heatmap_loss(heatmaps, masks, config)
    heat = config.A * bg + config.B * fg
    parts = {"cross_entropy": (1 - config.P) * ce, "heatmap": config.P * heat}
    terms = {"cross_entropy": ce, "background": bg, "foreground": fg, "heatmap": heat}
    return ISNetOutput(parts=parts, terms=terms, logits=logits, heatmaps=heatmaps)


def isnet_objective(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    config: ISNetLossConfig,
    *,
    generator: torch.Generator | None = None,
    allow_autocast: bool = False,
    class_weight: Tensor | None = None,
) -> ISNetOutput:
    """The objective of one batch from a single forward pass (heatmaps with a graph when grad is enabled).

    For ``config.variant == "standard"`` or ``config.P == 0`` no heatmap is computed and the objective is
    the cross-entropy of an ordinary forward pass.

    Parameters
    ----------
    model
        Classifier (see :func:`isnetflow.lrp.lrp_forward` for supported layers).
    images, labels, masks
        ``(B, C, H, W)`` images, ``(B,)`` class indices, binary lung masks ``(B, [1,] H, W)``.
    config
        Loss and LRP hyper-parameters.
    generator
        Random generator for the stochastic variant (reproducibility).
    allow_autocast
        Let an enclosing ``torch.autocast`` region apply to the LRP pass (off: always float32; see
        :func:`isnetflow.isnet.explain_batch`).
    class_weight
        Per-class cross-entropy weights (see :func:`isnet_loss`).
    """
    if config.variant == "standard" or config.P == 0:
        return isnet_loss(model(images), labels, None, None, config, class_weight=class_weight)
    logits, heatmaps = explain_batch(
        model,
        images,
        labels,
        config,
        create_graph=torch.is_grad_enabled(),
        generator=generator,
        allow_autocast=allow_autocast,
    )
    return isnet_loss(logits, labels, heatmaps, masks, config, class_weight=class_weight)


@dataclass(frozen=True)
class StepDiagnostics:
    """Gradient diagnostics of one step (floats): the classifier and relevance gradients' norms (the
    relevance norm after projection), their cosine before projection, and the relevance gradient's scale
    (cap times ramp)."""

    grad_norm_ce: float
    grad_norm_heatmap: float
    grad_cosine: float
    heatmap_grad_scale: float

    def as_dict(self) -> dict[str, float]:
        """The diagnostics by name, as the training history records them."""
        return {
            "grad_norm_ce": self.grad_norm_ce,
            "grad_norm_heatmap": self.grad_norm_heatmap,
            "grad_cosine": self.grad_cosine,
            "heatmap_grad_scale": self.heatmap_grad_scale,
        }


def _group_gradients(loss: Tensor | None, params: list[nn.Parameter], retain_graph: bool) -> list[Tensor]:
    if loss is None:
        return [torch.zeros_like(p) for p in params]
    raw = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw, strict=True)]


def step_gradients(
    model: nn.Module,
    out: ISNetOutput,
    config: ISNetLossConfig,
    *,
    ramp: float = 1.0,
    all_reduce_mean: AllReduce | None = None,
) -> StepDiagnostics:
    """Set ``.grad`` of ``model``'s parameters from ``out``'s parts; return the gradient diagnostics.

    The classifier parts (:data:`CLASSIFIER_PARTS`) and the relevance parts are differentiated separately;
    their sum is the gradient of ``out.loss``. With ``config.grad_projection`` a relevance gradient that
    opposes the classifier gradient (negative dot product) first loses that component (PCGrad); with
    ``config.grad_balance`` it is then scaled down so that its norm is at most ``grad_balance`` times the
    classifier gradient's norm, and finally multiplied by ``ramp`` (the heatmap ramp of the first ISNet
    epochs). Under data parallelism ``all_reduce_mean`` averages both gradients over the ranks first (one
    call), so the projection and the cap see the global batch's gradients, as one process would.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    classifier = [t for name, t in out.parts.items() if name in CLASSIFIER_PARTS]
    relevance = [t for name, t in out.parts.items() if name not in CLASSIFIER_PARTS]
    g_ce = _group_gradients(functools.reduce(operator.add, classifier) if classifier else None, params, True)
    g_hm = _group_gradients(functools.reduce(operator.add, relevance) if relevance else None, params, False)
    if all_reduce_mean is not None:
        both = all_reduce_mean(g_ce + g_hm)
        g_ce, g_hm = both[: len(params)], both[len(params) :]

    def norm(gs: list[Tensor]) -> Tensor:
        return torch.sqrt(torch.stack([(g.double() ** 2).sum() for g in gs]).sum())

    n_ce, n_hm = norm(g_ce), norm(g_hm)
    dot = torch.stack([(a.double() * b.double()).sum() for a, b in zip(g_ce, g_hm, strict=True)]).sum()
    cosine = float(dot / (n_ce * n_hm).clamp_min(1e-30))
    if config.grad_projection and float(dot) < 0:  # PCGrad: drop the part that opposes the classifier
        coef = (dot / (n_ce**2).clamp_min(1e-30)).float()
        g_hm = [b - coef * a for a, b in zip(g_ce, g_hm, strict=True)]
        n_hm = norm(g_hm)
    scale = 1.0
    balance = config.grad_balance
    if balance is not None and float(n_hm) > balance * float(n_ce):
        scale = balance * float(n_ce) / max(float(n_hm), 1e-30)
    scale *= ramp
    for p, a, b in zip(params, g_ce, g_hm, strict=True):
        p.grad = a + b if scale == 1.0 else a + scale * b
    return StepDiagnostics(float(n_ce), float(n_hm), cosine, scale)


def isnet_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    config: ISNetLossConfig,
    *,
    generator: torch.Generator | None = None,
    class_weight: Tensor | None = None,
    ramp: float = 1.0,
    all_reduce_mean: AllReduce | None = None,
    extra_parts: Callable[[ISNetOutput], Mapping[str, Tensor]] | None = None,
) -> tuple[ISNetOutput, StepDiagnostics]:
    """One ISNet training step up to the optimizer: the objective (:func:`isnet_objective`) and the
    gradients of all its parts (:func:`step_gradients`) set on ``model``. ``extra_parts`` adds parts
    computed from the objective's forward pass (the training's distillation part). The caller zeroes the
    gradients before and steps the optimizer after. Raises :class:`FloatingPointError` on a non-finite
    objective, before any gradient is set."""
    out = isnet_objective(
        model, images, labels, masks, config, generator=generator, class_weight=class_weight
    )
    if extra_parts is not None:
        out = out.with_parts(extra_parts(out))
    if not torch.isfinite(out.loss):
        raise FloatingPointError(f"non-finite ISNet objective: {float(out.loss)}")
    return out, step_gradients(model, out, config, ramp=ramp, all_reduce_mean=all_reduce_mean)
