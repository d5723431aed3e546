"""The ISNet training objective: heatmap variants, loss terms, the objective and its training step.

* :mod:`isnetflow.isnet.variants`: the registry of heatmap variants and the instrumented forward pass;
* :mod:`isnetflow.isnet.loss`: the background and foreground terms and the C1/C2 estimator;
* :mod:`isnetflow.isnet.objective`: the configuration, the objective's named parts and one step.

Typical training step::

    optimizer.zero_grad()
    out, diagnostics = isnet_step(model, images, labels, masks, config)  # sets .grad of every part
    optimizer.step()
"""

from __future__ import annotations

from isnetflow.isnet.loss import (
    ForegroundRangeEstimator,
    background_loss,
    foreground_loss,
    global_weighted_rank_pooling,
)
from isnetflow.isnet.objective import (
    CLASSIFIER_PARTS,
    PART_HISTORY_KEYS,
    ISNetLossConfig,
    ISNetOutput,
    StepDiagnostics,
    heatmap_loss,
    isnet_loss,
    isnet_objective,
    isnet_step,
    loss_config_from_settings,
    part_values,
    step_gradients,
)
from isnetflow.isnet.variants import (
    VARIANTS,
    HeatmapVariant,
    explain_batch,
    selective_seed,
    stochastic_classes,
)

__all__ = [
    "CLASSIFIER_PARTS",
    "PART_HISTORY_KEYS",
    "VARIANTS",
    "ForegroundRangeEstimator",
    "HeatmapVariant",
    "ISNetLossConfig",
    "ISNetOutput",
    "StepDiagnostics",
    "background_loss",
    "explain_batch",
    "foreground_loss",
    "global_weighted_rank_pooling",
    "heatmap_loss",
    "isnet_loss",
    "isnet_objective",
    "isnet_step",
    "loss_config_from_settings",
    "part_values",
    "selective_seed",
    "step_gradients",
    "stochastic_classes",
]
