"""One optimizer step per phase: warm-up, ISNet and standard training.

A step takes a batch (images, masks, labels) and the global step, prepares its inputs, sets ``.grad`` of
the model's parameters and returns the step's values for the epoch's means (``loss``, ``ce``, and for an
ISNet step its gradient diagnostics and every part of the objective under its history keys:
:func:`isnetflow.isnet.part_values`). The loop zeroes the gradients before, and clips and steps the
optimizer after.

* :class:`StandardStep`: cross-entropy on the images as they are (the standard model).
* :class:`WarmupStep`: the ISNet's warm-up: cross-entropy on shortcut-free inputs (``train.warmup_inputs``:
  background-swapped composites by default, raw images in the authors' recipe, or lungs only).
* :class:`TeacherStep`: the lungs-only teacher's step with context (``distill.context_share``): lungs on
  black, a share of the batch with another image's background instead.
* :class:`ISNetStep`: ``train.isnet_swap_fraction`` of the batch background-swapped, then one step of the
  ISNet objective (:func:`isnetflow.isnet.isnet_step`), or cross-entropy only for the ``swap`` arm
  (``train.relevance_loss: false``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isnetflow.config import TrainConfig
from isnetflow.isnet import ISNetLossConfig, isnet_step, part_values
from isnetflow.training.data import shortcut_free_inputs
from isnetflow.training.distill import Distiller, StudentCapture
from isnetflow.training.distributed import DistContext
from isnetflow.training.streams import RandomStreams

__all__ = ["ISNetStep", "StandardStep", "TeacherStep", "TrainStep", "WarmupStep"]


class TrainStep(Protocol):
    """Sets the gradients of one optimizer step; returns the step's values by name."""

    def __call__(self, x: Tensor, m: Tensor, y: Tensor, global_step: int) -> dict[str, float]:
        """One step on images ``x``, lung masks ``m`` and labels ``y`` at optimizer step ``global_step``."""


def _range_shares(heatmaps: Tensor, masks: Tensor, c1: float, c2: float) -> tuple[float, float]:
    """Share of maps whose in-mask absolute relevance ``S`` is below ``C1`` and above ``C2``."""
    m = masks[:, None].to(heatmaps.dtype) if masks.dim() == 4 else masks[:, None, None].to(heatmaps.dtype)
    s = (heatmaps.detach().abs() * m).flatten(2).sum(2)
    return float((s < c1).float().mean()), float((s > c2).float().mean())


class StandardStep:
    """Cross-entropy on the batch (class-weighted when set), plus the lungs-only teacher's distillation part
    when a ``distiller`` is set (``train.distill``); bf16 autocast on CUDA when ``amp``; the gradients
    averaged over the data-parallel ranks."""

    def __init__(
        self,
        model: nn.Module,
        ctx: DistContext,
        class_weight: Tensor | None,
        amp: bool,
        device: torch.device,
        distiller: Distiller | None = None,
    ) -> None:
        """``class_weight``: the cross-entropy's class weights (``None``: unweighted)."""
        self.model, self.ctx, self.class_weight, self.amp, self.device = model, ctx, class_weight, amp, device
        self.distiller = distiller

    def __call__(self, x: Tensor, m: Tensor, y: Tensor, global_step: int) -> dict[str, float]:
        """The step of :class:`TrainStep`."""
        capture: contextlib.AbstractContextManager[StudentCapture] = contextlib.nullcontext(StudentCapture())
        if self.distiller is not None:
            capture = self.distiller.capture(self.model)
        with capture as student, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(x)
        ce = F.cross_entropy(logits.float(), y, weight=self.class_weight)
        values: dict[str, float] = {}
        loss = ce
        if self.distiller is not None:
            distillation = self.distiller.part(student, logits, x, m)
            loss = ce + distillation
            values["distillation"] = float(distillation.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)}")
        loss.backward()
        self.ctx.average_gradients(self.model)
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), **values}


def _with_swapped_share(
    base: Tensor,
    x: Tensor,
    m: Tensor,
    share: float,
    generator: torch.Generator,
    background_scale: float = 1.0,
) -> Tensor:
    """``base`` with ``share`` of its images (drawn from ``generator``) replaced by the background-swap
    composite of ``x`` among them (:func:`~isnetflow.training.data.shortcut_free_inputs`, donor pixels
    scaled by ``background_scale``); unchanged when fewer than two are drawn (a swap needs a donor other
    than the image itself)."""
    n = round(share * x.shape[0])
    if n < 2:
        return base
    sub = torch.randperm(x.shape[0], generator=generator)[:n].to(x.device)
    out = base.clone()
    out[sub] = shortcut_free_inputs(
        x[sub], m[sub], "background_swap", generator, background_scale=background_scale
    )
    return out


class WarmupStep:
    """The ISNet's warm-up: the standard step on ``cfg.warmup_inputs`` built from each batch (stream
    ``warmup_inputs``), their background dimmed by ``fade`` (``train.background_fade_epochs``)."""

    def __init__(self, standard: StandardStep, cfg: TrainConfig, streams: RandomStreams, fade: float) -> None:
        """``standard``: the step run on the built inputs; ``streams``: the training's random streams."""
        self.standard, self.cfg, self.streams, self.fade = standard, cfg, streams, fade

    def __call__(self, x: Tensor, m: Tensor, y: Tensor, global_step: int) -> dict[str, float]:
        """The step of :class:`TrainStep`."""
        gen = self.streams.generator("warmup_inputs", global_step)
        x = shortcut_free_inputs(x, m, self.cfg.warmup_inputs, gen, background_scale=self.fade)
        return self.standard(x, m, y, global_step)


class TeacherStep:
    """A step of the lungs-only teacher with context (``distill.context_share`` > 0), on raw images: every
    image shows its lungs on black except ``share`` of the batch (stream ``teacher_context``), which keeps
    its lungs and takes another of those images' background, the ISNet's swap composite
    (:func:`~isnetflow.training.data.shortcut_free_inputs`); then the standard step."""

    def __init__(self, standard: StandardStep, share: float, streams: RandomStreams) -> None:
        """``standard``: the step run on the built inputs; ``share``: the batch's share with a background."""
        self.standard, self.share, self.streams = standard, share, streams

    def __call__(self, x: Tensor, m: Tensor, y: Tensor, global_step: int) -> dict[str, float]:
        """The step of :class:`TrainStep`."""
        gen = self.streams.generator("teacher_context", global_step)
        return self.standard(_with_swapped_share(x * m, x, m, self.share, gen), m, y, global_step)


class ISNetStep:
    """An ISNet-phase step: ``cfg.isnet_swap_fraction`` of the batch background-swapped (stream ``swap``),
    then the ISNet objective's step with the heatmap gradient scaled by ``ramp``, or, without the
    relevance loss, the standard step. Its values: the loss, the gradient diagnostics and every part of
    the objective by name (:func:`isnetflow.isnet.part_values`), the heatmap part with the shares of maps
    outside the foreground range ``[C1, C2]``.

    ``objective`` is the ISNet objective of the epoch (``None``: the swap arm).
    """

    def __init__(
        self,
        standard: StandardStep,
        cfg: TrainConfig,
        streams: RandomStreams,
        objective: ISNetLossConfig | None,
        *,
        ramp: float,
        fade: float,
    ) -> None:
        """``fade``: the background scale of the swapped images; the rest as in the class docstring."""
        self.standard, self.cfg, self.streams = standard, cfg, streams
        self.objective, self.ramp, self.fade = objective, ramp, fade

    def __call__(self, x: Tensor, m: Tensor, y: Tensor, global_step: int) -> dict[str, float]:
        """The step of :class:`TrainStep`."""
        if self.cfg.isnet_swap_fraction > 0:
            gen = self.streams.generator("swap", global_step)
            x = _with_swapped_share(x, x, m, self.cfg.isnet_swap_fraction, gen, self.fade)
        config = self.objective
        if config is None:  # the swap arm: the same inputs, cross-entropy only
            return self.standard(x, m, y, global_step)
        ctx = self.standard.ctx
        distiller = self.standard.distiller
        with contextlib.ExitStack() as stack:
            extra = None
            if distiller is not None:
                student = stack.enter_context(distiller.capture(self.standard.model))
                extra = lambda out: {"distillation": distiller.part(student, out.logits, x, m)}  # noqa: E731
            out, diagnostics = isnet_step(
                self.standard.model, x, y, m, config,
                generator=self.streams.generator("heatmap_classes", global_step),
                class_weight=self.standard.class_weight,
                ramp=self.ramp,
                all_reduce_mean=ctx.all_reduce_mean if ctx.distributed else None,
                extra_parts=extra,
            )  # fmt: skip
        assert out.heatmaps is not None
        below, above = _range_shares(out.heatmaps, m, config.C1, config.C2)
        parts = part_values(out)
        parts["heatmap"] = {**parts["heatmap"], "share_below_c1": below, "share_above_c2": above}
        reported = {key: value for part in parts.values() for key, value in part.items()}
        return {"loss": float(out.loss.detach()), **diagnostics.as_dict(), **reported}
