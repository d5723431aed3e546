"""The phases of a training: which step an epoch runs, and when the ISNet's warm-up ends.

* ``standard``: the standard model's every epoch.
* ``warmup``: the ISNet's first epochs, cross-entropy on shortcut-free inputs; never selected. It lasts
  ``train.warmup_epochs``, or with ``train.warmup_patience`` until validation AUC stops rising
  (:func:`end_warmup_on_plateau`).
* ``isnet``: the rest; the heatmap loss is on unless ``train.relevance_loss`` is off (the ``swap`` arm),
  its gradient ramped in over ``heatmap.ramp_epochs``. With ``train.warmup_restart`` (the authors' recipe)
  its first epoch starts again from the initial weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from isnetflow.config import TrainConfig
from isnetflow.training.state import TrainState

log = logging.getLogger(__name__)

__all__ = ["Phase", "audits_background", "end_warmup_on_plateau", "phase_of"]


@dataclass(frozen=True)
class Phase:
    """An epoch's phase and its per-epoch factors."""

    name: Literal["standard", "warmup", "isnet"]
    heat_on: bool
    """The heatmap loss is on (ISNet phase with the relevance loss)."""
    ramp: float
    """Multiplier of the heatmap gradient (``heatmap.ramp_epochs``)."""
    fade: float
    """Background brightness of the swapped composites (``train.background_fade_epochs``)."""
    restart: bool
    """First ISNet epoch of a ``warmup_restart`` run: start again from the initial weights."""

    @property
    def selectable(self) -> bool:
        """Whether the selection may choose this epoch (never a warm-up epoch)."""
        return self.name != "warmup"


def phase_of(cfg: TrainConfig, state: TrainState, epoch: int) -> Phase:
    """The phase of ``epoch`` given where the warm-up ended (``state.isnet_start``)."""
    fade = min(1.0, epoch / cfg.background_fade_epochs) if cfg.background_fade_epochs else 1.0
    if cfg.mode != "isnet":
        return Phase("standard", heat_on=False, ramp=1.0, fade=fade, restart=False)
    start = state.isnet_start
    if start is None or epoch < start:
        return Phase("warmup", heat_on=False, ramp=1.0, fade=fade, restart=False)
    heat_on = cfg.relevance_loss
    ramp_epochs = cfg.heatmap.ramp_epochs
    ramp = min(1.0, (epoch - start + 1) / ramp_epochs) if heat_on and ramp_epochs else 1.0
    restart = cfg.warmup_restart and epoch == start > 0
    return Phase("isnet", heat_on=heat_on, ramp=ramp, fade=fade, restart=restart)


def audits_background(cfg: TrainConfig, phase: Phase, epoch: int) -> bool:
    """Whether ``epoch``'s validation measures the audit's background share: every ISNet-phase epoch (its
    selection reads it), otherwise every ``cfg.audit_every`` epochs and the last (a learning curve only)."""
    return phase.name == "isnet" or epoch % cfg.audit_every == 0 or epoch == cfg.epochs - 1


def end_warmup_on_plateau(cfg: TrainConfig, state: TrainState, epoch: int, val_auc: float) -> None:
    """After warm-up ``epoch``: set ``state.isnet_start`` once a ``cfg.warmup_patience`` warm-up ends.

    It ends after ``cfg.warmup_epochs`` at the earliest, once validation AUC has not improved for
    ``warmup_patience`` epochs, and after ``warmup_max_epochs`` (default half the schedule) at the latest.
    """
    if cfg.warmup_patience is None or state.isnet_start is not None:
        return
    if math.isfinite(val_auc) and val_auc > state.warmup_best_auc:
        state.warmup_best_auc, state.warmup_bad_epochs = val_auc, 0
    else:
        state.warmup_bad_epochs += 1
    done = epoch + 1
    longest = cfg.warmup_max_epochs if cfg.warmup_max_epochs is not None else max(1, cfg.epochs // 2)
    if done >= cfg.warmup_epochs and (state.warmup_bad_epochs >= cfg.warmup_patience or done >= longest):
        state.isnet_start = done
        log.info("warm-up ends after epoch %d (best validation AUC %.3f)", epoch, state.warmup_best_auc)
