"""What the training measures on its validation split after every epoch (rank 0 only).

Validation AUC (:func:`isnetflow.evaluation.metrics.abnormal_auc`, the evaluation's abnormal-vs-normal AUC)
and cross-entropy; the counterfactual swap change; the audit's background share on ``train.audit_samples``
images, measured with ``train.audit`` (the settings' one ``audit`` section, which the evaluation's
background-share gate measures with too); and, while the heatmap loss is on, the ISNet objective and every
part of it by name (:func:`isnetflow.isnet.part_values`). The selection (:mod:`isnetflow.training.selection`)
scores epochs on these.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from isnetflow.config import AuditConfig, TrainConfig
from isnetflow.evaluation.metrics import abnormal_auc
from isnetflow.isnet import PART_HISTORY_KEYS, ISNetLossConfig, isnet_objective, part_values
from isnetflow.nets import predict_proba
from isnetflow.training.data import TrainData
from isnetflow.training.streams import RandomStreams

__all__ = [
    "VALIDATION_BATCH",
    "audit_background_share",
    "val_heatmap_terms",
    "val_swap_change",
    "validate_epoch",
]

#: images per forward pass of the validation's predictions
VALIDATION_BATCH = 64


def audit_background_share(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, audit: AuditConfig
) -> float:
    """Mean share of positive relevance outside the lungs, measured as the shortcut audit measures it.

    The measurement of the background-share promotion gate (:func:`isnetflow.audit.explain.audit_relevance`
    with ``audit``, the ``targets`` logits), on validation images: the selection limit is judged with the
    gate's own yardstick.
    """
    from isnetflow.audit.explain import audit_relevance  # lazy: zennit is only needed here
    from isnetflow.audit.explain import background_share as share_of

    model.eval()
    rel = audit_relevance(model, images, targets, audit)
    shares = share_of(rel, masks.numpy())
    return float(np.nanmean(shares)) if np.isfinite(shares).any() else math.nan


def val_heatmap_terms(
    model: nn.Module,
    data: TrainData,
    indices: np.ndarray,
    config: ISNetLossConfig,
    batch_size: int,
    seed: int,
    class_weight: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean ISNet objective over ``indices`` (eval mode, no graph): ``loss`` and every part of it under its
    history keys (:func:`isnetflow.isnet.part_values`: ``ce``, ``background``, ``foreground``, and any other
    part under its own name).

    Computed by :func:`isnetflow.isnet.isnet_objective`, the same objective the training steps use.
    """
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    for i in range(0, indices.size, batch_size):
        idx = indices[i : i + batch_size]
        x, m, y = data.images[idx].to(device), data.masks[idx].to(device), data.labels[idx].to(device)
        gen = RandomStreams(seed).generator("validation", i)
        with torch.no_grad():
            out = isnet_objective(model, x, y, m, config, generator=gen, class_weight=class_weight)
        values = {"loss": float(out.loss)}
        for part in part_values(out).values():
            values |= part
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * idx.size
    n = max(1, indices.size)
    return {k: v / n for k, v in sums.items()}


def val_swap_change(
    model: nn.Module, data: TrainData, indices: np.ndarray, proba: np.ndarray, seed: int
) -> float:
    """Mean ``|score(composite) - score(original)|`` over ``indices`` for the counterfactual background swap.

    Each validation image keeps its lungs on the background of a validation image with the other label
    (another site when there is one): :func:`isnetflow.audit.counterfactual.choose_donors` and the
    union-of-masks composite. ``proba`` are the originals' probabilities. A network that reads only the
    lungs scores near 0; a threshold-free twin of the evaluation's flip rate, on internal data only.
    """
    from isnetflow.audit.counterfactual import choose_donors

    if indices.size < 2:
        return float("nan")
    labels = (data.labels.numpy() > 0).astype(int)
    donors = choose_donors(data.sites, labels.tolist(), indices.tolist(), indices.tolist(), seed=seed)
    pairs = [(k, d) for k, d in enumerate(donors) if d is not None]
    if not pairs:
        return float("nan")
    rec = torch.as_tensor(indices[[k for k, _ in pairs]])
    don = torch.as_tensor(np.asarray([d for _, d in pairs], dtype=np.int64))
    region = (data.masks[rec] > 0.5) | (data.masks[don] > 0.5)
    composite = torch.where(region, data.images[rec], data.images[don])
    swapped = predict_proba(model, composite, batch_size=VALIDATION_BATCH)
    original = proba[[k for k, _ in pairs]]
    return float(np.abs(1.0 - swapped[:, 0] - (1.0 - original[:, 0])).mean())


def validate_epoch(
    cfg: TrainConfig,
    data: TrainData,
    model: nn.Module,
    val_idx: np.ndarray,
    loss_config: ISNetLossConfig | None,
    class_weight: torch.Tensor | None,
    *,
    audit: bool = True,
) -> dict[str, float]:
    """The end-of-epoch validation metrics: AUC, CE, swap change, audit background share (with ``audit``
    and ``cfg.audit_samples``; absent otherwise), and, when the heatmap loss is on, the ISNet objective of
    ``loss_config`` (``val_isnet_loss``) and its parts (``val_<key>``, :func:`val_heatmap_terms`)."""
    metrics: dict[str, float] = {}
    proba = predict_proba(model, data.images[val_idx], batch_size=VALIDATION_BATCH)
    val_labels = data.labels[val_idx].numpy()
    metrics["val_auc"] = abnormal_auc(val_labels, proba)
    metrics["val_ce"] = float(
        F.nll_loss(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(val_labels))
    )
    metrics["val_swap_change"] = val_swap_change(model, data, val_idx, proba, cfg.seed)
    if audit and cfg.audit_samples:
        from isnetflow.audit.explain import explained_classes  # lazy: zennit is only needed here

        n = cfg.audit_samples
        a_idx = val_idx[:n]
        targets = torch.as_tensor(explained_classes(cfg.audit, val_labels[:n], proba[:n]), dtype=torch.long)
        metrics["val_background_share"] = audit_background_share(
            model, data.images[a_idx], data.masks[a_idx], targets, cfg.audit
        )
    if loss_config is not None:
        terms = val_heatmap_terms(
            model, data, val_idx, loss_config, cfg.batch_size, cfg.seed, class_weight=class_weight
        )
        # the cross-entropy part is val_ce above, from the predictions and unweighted, not the objective's
        # class-weighted one
        measured_apart = {"loss", *PART_HISTORY_KEYS["cross_entropy"]}
        metrics |= {f"val_{key}": value for key, value in terms.items() if key not in measured_apart}
        metrics["val_isnet_loss"] = terms["loss"]
    return metrics
