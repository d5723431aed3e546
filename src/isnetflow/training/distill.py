"""Distillation from a lungs-only teacher (``train.distill``): the part the ISNet's steps add.

The teacher is the same network trained on lung-masked images. :class:`Distiller` computes, for a batch
whose images the student sees as ``x`` (raw, or with another image's background) and whose own lungs are
``x * m``, the part ``weight * mean((f(x) - f_t(x * m))^2) / mean(f_t(x * m)^2)``: ``f`` the features the
classifier head reads (the input of the network's last linear layer), captured during the student's own
forward pass (:func:`head_features`), ``f_t`` the teacher's, without gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Distiller", "head_features"]


def _head(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier head to distil at")
    return linears[-1]


@contextlib.contextmanager
def head_features(model: nn.Module) -> Iterator[list[Tensor]]:
    """While active, every forward pass of ``model`` appends the input of its last linear layer (the
    pooled features the classifier reads, with their graph) to the yielded list."""
    captured: list[Tensor] = []

    def keep(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0])

    handle = _head(model).register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


class Distiller:
    """The distillation part of a batch against a frozen lungs-only ``teacher``.

    ``target``: "features" (the features the head reads) or "logits" (the teacher's class probabilities at
    ``temperature``, Kullback-Leibler).
    """

    def __init__(
        self, teacher: nn.Module, weight: float, target: str = "features", temperature: float = 2.0
    ) -> None:
        """Freeze ``teacher`` (eval mode, no gradients); ``weight`` scales the part."""
        if target not in ("features", "logits"):
            raise ValueError(f"unknown distillation target {target!r}; choose 'features' or 'logits'")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight, self.target, self.temperature = weight, target, temperature

    def part(self, student_features: Tensor, student_logits: Tensor, x: Tensor, m: Tensor) -> Tensor:
        """The weighted part for the student's ``student_features`` / ``student_logits`` of ``x`` against
        the teacher's of ``x * m`` (module docstring)."""
        with torch.no_grad(), head_features(self.teacher) as captured:
            teacher_logits = self.teacher(x * m)
        if self.target == "logits":
            t = self.temperature
            kl = F.kl_div(
                F.log_softmax(student_logits.float() / t, dim=1),
                F.log_softmax(teacher_logits.detach().float() / t, dim=1),
                log_target=True,
                reduction="batchmean",
            )
            return self.weight * t * t * kl
        target = captured[-1].detach().float()
        diff = student_features.float() - target
        return self.weight * diff.pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
