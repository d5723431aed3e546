"""The ISNet training objective: heatmap variants, background/foreground loss terms, C1/C2 estimation.

Typical training step::

    out = isnet_objective(model, images, labels, masks, config)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
"""

from __future__ import annotations

from isnetflow.isnet.loss import (
    ForegroundRangeEstimator,
    ISNetLossConfig,
    ISNetLossTerms,
    background_loss,
    foreground_loss,
    global_weighted_rank_pooling,
    heatmap_loss,
    isnet_loss,
    loss_config_from_settings,
)
from isnetflow.isnet.variants import (
    VARIANTS,
    HeatmapVariant,
    ISNetOutput,
    explain_batch,
    isnet_objective,
    selective_seed,
    stochastic_classes,
)

__all__ = [
    "VARIANTS",
    "ForegroundRangeEstimator",
    "HeatmapVariant",
    "ISNetLossConfig",
    "ISNetLossTerms",
    "ISNetOutput",
    "background_loss",
    "explain_batch",
    "foreground_loss",
    "global_weighted_rank_pooling",
    "heatmap_loss",
    "isnet_loss",
    "isnet_objective",
    "loss_config_from_settings",
    "selective_seed",
    "stochastic_classes",
]
