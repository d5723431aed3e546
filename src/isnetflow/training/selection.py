"""Model selection and early stopping: which epoch's weights a training returns.

The standard model: the epoch with the best validation AUC. The ISNet (and the ``swap`` arm): warm-up
epochs are never chosen; among the ISNet-phase epochs, ``train.selection`` scores each epoch
(:func:`selection_score`: validation AUC with soft limits on the background share and the swap change, or
the validation objective), and with ``train.selection_auc_tolerance`` the choice is the best score among
the epochs within that tolerance of the best validation AUC (:func:`choose_from_front`), so an epoch far
below the best AUC is never kept for its explanations.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from isnetflow.config import TrainConfig
from isnetflow.training.state import FrontEntry, TrainState

log = logging.getLogger(__name__)

__all__ = ["SELECTION_PENALTY", "Selector", "choose_from_front", "selection_score", "update_front", "weights"]

SELECTION_PENALTY = 5.0
"""Validation AUC given up per unit of background share or swap change above its selection limit."""


def selection_score(cfg: TrainConfig, metrics: dict[str, float], isnet_phase: bool) -> float:
    """Lower is better. Never prefers a worse validation AUC among epochs within the background limit."""
    auc = metrics["val_auc"]
    if not isnet_phase:
        score = -auc
    elif cfg.selection == "objective":
        score = metrics["val_isnet_loss"]
    else:
        # A limit whose measurement is missing (audit_samples 0, no donor site) does not apply. Soft limits:
        # each unit above a limit costs SELECTION_PENALTY of validation AUC, so an epoch just over a limit
        # with a far better AUC still wins over a chance-level one inside it. An epoch whose validation
        # AUC is below 0.5 (inverted) ranks below every epoch that is not.
        share = metrics.get("val_background_share", math.nan)
        swap = metrics.get("val_swap_change", math.nan)
        excess = 0.0 if math.isnan(share) else max(0.0, share - cfg.selection_max_background)
        excess += 0.0 if math.isnan(swap) else max(0.0, swap - cfg.selection_max_swap_change)
        score = -auc + SELECTION_PENALTY * excess + (10.0 if auc < 0.5 else 0.0)
    return math.inf if math.isnan(score) else score


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s weights and buffers (a selection candidate)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def update_front(front: list[FrontEntry], epoch: int, auc: float, score: float, model: nn.Module) -> None:
    """Add ``epoch`` to ``front``, the epochs no other epoch beats on both validation AUC and selection
    score (higher AUC, lower score); drop the ones it beats. Only these can be chosen by
    :func:`choose_from_front`, so only their weights are kept."""
    if any(f["auc"] >= auc and f["score"] <= score for f in front):
        return
    front[:] = [f for f in front if not (auc >= f["auc"] and score <= f["score"])]
    front.append({"epoch": epoch, "auc": auc, "score": score, "state": weights(model)})


def choose_from_front(front: list[FrontEntry], tolerance: float) -> FrontEntry:
    """The epoch with the best selection score among those whose validation AUC is within ``tolerance`` of
    the best validation AUC (the best AUC is always on the front); ties go to the earlier epoch."""
    top = max(f["auc"] for f in front)
    near = [f for f in front if f["auc"] >= top - tolerance]
    return min(near, key=lambda f: (f["score"], f["epoch"]))


class Selector:
    """Selection and early stopping over a training's epochs; it keeps its record in the
    :class:`TrainState` (the checkpoint), so a resumed run chooses as an uninterrupted one."""

    def __init__(self, cfg: TrainConfig) -> None:
        """``cfg``: the training settings that define the score and the stopping rule."""
        self.cfg = cfg

    def observe(
        self, state: TrainState, epoch: int, metrics: dict[str, float], selectable: bool, isnet_phase: bool,
        model: nn.Module,
    ) -> None:  # fmt: skip
        """Score ``epoch``'s validation ``metrics``; keep its weights when it may be chosen; stop early after
        ``train.patience`` selectable epochs without a better score."""
        if not selectable:
            return
        cfg = self.cfg
        score = selection_score(cfg, metrics, isnet_phase)
        if cfg.selection_auc_tolerance is not None and math.isfinite(metrics["val_auc"]):
            update_front(state.front, epoch, metrics["val_auc"], score, model)
        if score < state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            state.best_auc = metrics["val_auc"]
            state.best_state = weights(model)
        else:
            state.bad_epochs += 1
            if cfg.patience is not None and state.bad_epochs >= cfg.patience:
                state.stopped = True
                log.info("early stopping after epoch %d (best %d)", epoch, state.best_epoch)

    def finish(self, state: TrainState, model: nn.Module) -> None:
        """Load the chosen epoch's weights into ``model`` (and record the choice in ``state``)."""
        if self.cfg.selection_auc_tolerance is not None and state.front:
            chosen = choose_from_front(state.front, self.cfg.selection_auc_tolerance)
            state.best_epoch, state.best_auc = chosen["epoch"], chosen["auc"]
            state.best_state = chosen["state"]
        if state.best_state is not None:
            model.load_state_dict(state.best_state)
