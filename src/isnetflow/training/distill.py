"""Distillation from a lungs-only teacher (``train.distill``): the part the ISNet's steps add.

The teacher is the same network trained on lung-masked images. :class:`Distiller` computes, for a batch
whose images the student sees as ``x`` (raw, or with another image's background) and whose own lungs are
``x * m``, the part ``weight * mean((f(x) - f_t(x * m))^2) / mean(f_t(x * m)^2)``: ``f`` the features the
classifier head reads (the input of the network's last linear layer), captured during the student's own
forward pass (:func:`head_features`), ``f_t`` the teacher's, without gradient; or the ``logits`` target,
and optionally a spatial part on a feature map (:class:`Distiller`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isnetflow.isnet.objective import AllReduce

__all__ = ["Distiller", "StudentCapture", "feature_maps", "head_features"]


def _head(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier head to distil at")
    return linears[-1]


@contextlib.contextmanager
def _hooked(module: nn.Module, take_input: bool) -> Iterator[list[Tensor]]:
    """While active, every forward pass of ``module`` appends its input (``take_input``) or its output,
    with their graph, to the yielded list."""
    captured: list[Tensor] = []
    if take_input:
        handle = module.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _inputs, output: captured.append(output))
    try:
        yield captured
    finally:
        handle.remove()


def head_features(model: nn.Module) -> contextlib.AbstractContextManager[list[Tensor]]:
    """While active, every forward pass of ``model`` appends the input of its last linear layer (the
    pooled features the classifier reads, with their graph) to the yielded list."""
    return _hooked(_head(model), take_input=True)


def _map_module(model: nn.Module, layer: str | None) -> tuple[nn.Module, bool]:
    """The module whose output (``False``) or, for ``layer=None``, whose input (``True``: the last global
    pooling's, the network's last feature map) is the distilled feature map."""
    if layer is None:
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d)]
        if not pools:
            name = type(model).__name__
            raise ValueError(f"{name} has no global pooling: name a layer (distill.map_layer)")
        return pools[-1], True
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"distill.map_layer {layer!r} is not a layer of {type(model).__name__}")
    return modules[layer], False


def feature_maps(model: nn.Module, layer: str | None) -> contextlib.AbstractContextManager[list[Tensor]]:
    """While active, every forward pass of ``model`` appends the feature map of ``layer`` (a name in
    ``model.named_modules()``, its output; ``None``: the input of the last global pooling) to the list."""
    return _hooked(*_map_module(model, layer))


@dataclass
class StudentCapture:
    """What a student's forward pass gives the distillation part: the head's features and, when the
    spatial part is on, the feature map (the last of each list is the current pass's)."""

    features: list[Tensor] = field(default_factory=list)
    maps: list[Tensor] = field(default_factory=list)


def _relative_mse(
    student: Tensor, teacher: Tensor, weight: Tensor | None = None, reduce: AllReduce | None = None
) -> Tensor:
    """``mean(w (s - t)^2) / mean(w t^2)`` (``w`` broadcast over channels; ``None``: 1). Under data
    parallelism ``reduce`` averages the denominator (the teacher's, no gradient) over the ranks, so that the
    ranks' mean of this part is the part of the global batch, as one process computes it."""
    target = teacher.detach().float()
    diff2, target2 = (student.float() - target).pow(2), target.pow(2)
    if weight is None:
        numerator, denominator = diff2.mean(), target2.mean()
    else:
        numerator, denominator = (weight * diff2).sum(), (weight * target2).sum()
    if reduce is not None:
        denominator = reduce([denominator])[0]
    return numerator / denominator.clamp_min(1e-12)


class Distiller:
    """The distillation part of a batch against a frozen lungs-only ``teacher``.

    ``target``: "features" (the features the head reads) or "logits" (the teacher's class probabilities at
    ``temperature``, Kullback-Leibler). ``map_weight`` > 0 adds the spatial part ``map_weight *
    mean((g(x) - g_t(x * m))^2) / mean(g_t(x * m)^2)`` over every position of the feature map ``g`` at
    ``map_layer`` (:func:`feature_maps`), the background's included: where the teacher saw black, the
    student's map must look as if it had. ``map_region="lungs"``: each position weighted by the share of
    its cell inside the lung mask, the background left to the relevance loss.
    """

    def __init__(
        self,
        teacher: nn.Module,
        weight: float,
        target: str = "features",
        temperature: float = 2.0,
        *,
        map_weight: float = 0.0,
        map_layer: str | None = None,
        map_region: str = "image",
        all_reduce_mean: AllReduce | None = None,
    ) -> None:
        """Freeze ``teacher`` (eval mode, no gradients); ``weight`` scales the part; ``all_reduce_mean``: the
        mean over data-parallel ranks (``None``: one process)."""
        if target not in ("features", "logits"):
            raise ValueError(f"unknown distillation target {target!r}; choose 'features' or 'logits'")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight, self.target, self.temperature = weight, target, temperature
        if map_region not in ("image", "lungs"):
            raise ValueError(f"unknown distillation map region {map_region!r}; choose 'image' or 'lungs'")
        self.map_weight, self.map_layer, self.map_region = map_weight, map_layer, map_region
        self.reduce = all_reduce_mean
        if map_weight > 0:
            _map_module(teacher, map_layer)  # an unknown layer fails now, not at the first step

    @contextlib.contextmanager
    def capture(self, student: nn.Module) -> Iterator[StudentCapture]:
        """While active, the student's forward passes record what :meth:`part` needs."""
        with contextlib.ExitStack() as stack:
            got = StudentCapture(features=stack.enter_context(head_features(student)))
            if self.map_weight > 0:
                got.maps = stack.enter_context(feature_maps(student, self.map_layer))
            yield got

    def part(self, student: StudentCapture, student_logits: Tensor, x: Tensor, m: Tensor) -> Tensor:
        """The weighted part for the student's pass on ``x`` (``student``, ``student_logits``) against the
        teacher's on ``x * m`` (module docstring)."""
        with contextlib.ExitStack() as stack, torch.no_grad():
            captured = stack.enter_context(head_features(self.teacher))
            maps: list[Tensor] = []
            if self.map_weight > 0:
                maps = stack.enter_context(feature_maps(self.teacher, self.map_layer))
            teacher_logits = self.teacher(x * m)
        if self.target == "logits":
            t = self.temperature
            kl = F.kl_div(
                F.log_softmax(student_logits.float() / t, dim=1),
                F.log_softmax(teacher_logits.detach().float() / t, dim=1),
                log_target=True,
                reduction="batchmean",
            )
            total = self.weight * t * t * kl
        else:
            total = self.weight * _relative_mse(student.features[-1], captured[-1], reduce=self.reduce)
        if self.map_weight > 0:
            lungs = None
            if self.map_region == "lungs":  # each position weighted by the share of its cell inside the lungs
                lungs = F.adaptive_avg_pool2d(m.float(), (maps[-1].shape[-2], maps[-1].shape[-1]))
            total = total + self.map_weight * _relative_mse(student.maps[-1], maps[-1], lungs, self.reduce)
        return total
