"""The training's named random streams: every random choice is a pure function of the seed and counters.

That is what makes a killed run resume to exactly the weights of an uninterrupted one: the epoch's batch
order, each sample's augmentation, the swap donors of a step and the stochastic heatmap classes are drawn
from generators seeded by :func:`mix_seed` of ``(seed, counter, stream tag[, rank])``, never from a
generator's history.
"""

from __future__ import annotations

import torch

__all__ = ["STREAMS", "RandomStreams", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 32-bit seed from integers (FNV-1a over 48-bit parts): distinct inputs give unrelated seeds."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % 2**64
    return h % 2**32


STREAMS: dict[str, tuple[int, bool]] = {
    "swap": (3, True),
    "warmup_inputs": (5, True),
    "heatmap_classes": (7, True),
    "calibration": (11, False),
    "validation": (13, False),
    "teacher_context": (17, True),
}
"""Stream name -> (tag mixed into the seed, one stream per data-parallel rank).

``swap``: which samples of an ISNet batch are background-swapped, and their donors (counter: global
step); ``warmup_inputs``: the warm-up's shortcut-free composites (global step); ``heatmap_classes``: the
stochastic variant's explained classes (global step); ``calibration``: the warm-up heatmaps behind
automatic C1/C2 (batch offset); ``validation``: the validation objective's heatmap classes (batch offset);
``teacher_context``: which images of a teacher batch get a background, and their donors (global step;
``distill.context_share``).
The tags are part of the recorded results: changing one changes every training."""


class RandomStreams:
    """The generators of one training (``seed``; ``rank`` under data parallelism, ``None`` for one process,
    which keeps the single-process seeds)."""

    def __init__(self, seed: int, rank: int | None = None) -> None:
        """``seed`` and ``rank`` as in the class docstring."""
        self.seed = seed
        self.rank = rank

    def epoch_order(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch``'s batch order (the same on every rank)."""
        return torch.Generator().manual_seed(mix_seed(self.seed, epoch))

    def generator(self, name: str, counter: int) -> torch.Generator:
        """The generator of stream ``name`` (:data:`STREAMS`) at ``counter``."""
        tag, per_rank = STREAMS[name]
        rank = (self.rank,) if per_rank and self.rank is not None else ()
        return torch.Generator().manual_seed(mix_seed(self.seed, counter, tag, *rank))
