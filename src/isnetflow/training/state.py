"""The training state: everything a resumed run needs besides the weights and the optimizer.

:class:`TrainState` is also the checkpoint format: :meth:`TrainState.as_checkpoint` writes a plain dict
(tensors, numbers, lists: what ``torch.load(weights_only=True)`` reads back) under the checkpoint's
``"state"`` key, and :meth:`TrainState.from_checkpoint` reads one back, including checkpoints written
before a key existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from isnetflow.config import TrainConfig

__all__ = ["FrontEntry", "TrainState"]

FrontEntry = dict[str, Any]
"""One epoch on the selection's AUC/score front: ``epoch``, ``auc``, ``score`` and its weights ``state``."""


@dataclass
class TrainState:
    """Where a training stands: counters, the selection, early stopping, C1/C2 and the phase boundaries."""

    epoch: int = 0
    """The epoch under way (the next one once an epoch has ended)."""
    step_in_epoch: int = 0
    global_step: int = 0
    best_auc: float = -math.inf
    best_score: float = math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    """Weights of the best-scoring epoch so far (selection without the AUC tolerance, and early stopping)."""
    bad_epochs: int = 0
    """Selectable epochs in a row that did not improve the best score (early stopping)."""
    history: list[dict[str, float]] = field(default_factory=list)
    c1: float | None = None
    c2: float | None = None
    """The foreground range; ``None`` until the warm-up model has set it (automatic C1/C2)."""
    stopped: bool = False
    schedule_start: int = 0
    """Global step where the LR schedule (re)starts: the authors' warm-up restart moves it."""
    isnet_start: int | None = None
    """First epoch of the ISNet phase; ``None`` while a warm-up with ``warmup_patience`` goes on."""
    warmup_best_auc: float = -math.inf
    warmup_bad_epochs: int = 0
    front: list[FrontEntry] = field(default_factory=list)
    """The selection's AUC/score Pareto front (``train.selection_auc_tolerance``)."""
    epoch_sums: dict[str, float] = field(default_factory=dict)
    """Running sums of the step values of the epoch under way: a resumed epoch reports the mean over all
    its steps, not over the steps after the resume."""

    @classmethod
    def start(cls, cfg: TrainConfig) -> TrainState:
        """The state before the first step of ``cfg``'s training."""
        return cls(
            c1=cfg.heatmap.C1,
            c2=cfg.heatmap.C2,
            isnet_start=cfg.warmup_epochs if cfg.warmup_patience is None else None,
        )

    def as_checkpoint(self) -> dict[str, Any]:
        """The state as the checkpoint's plain dict (shares tensors and lists with the state)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], cfg: TrainConfig) -> TrainState:
        """The state of a checkpoint's dict; keys an older checkpoint lacks take their start values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise ValueError(f"checkpoint state has unknown keys {unknown}: written by another version")
        start = asdict(cls.start(cfg))
        if "isnet_start" not in saved:  # written before the key existed: the warm-up was fixed
            start["isnet_start"] = cfg.warmup_epochs
        return cls(**{**start, **saved})
