"""Training loop of the lung segmenter (no I/O, no tracking: the stage logs through ``on_epoch``).

Loss: MONAI :class:`~monai.losses.MaskedDiceLoss` + binary cross-entropy, both excluding the 'ignore'
pixels. Validation each epoch: Dice (ignore pixels excluded, after post-processing) on the held-out
patients, clean and under fixed strong perturbations (the training augmentation with frozen seeds: a
proxy for other hospitals). Early stopping keeps the weights with the best monitored Dice.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.losses import MaskedDiceLoss
from monai.utils import set_determinism
from torch import nn
from tqdm import tqdm

from isnetflow.config import SegmenterTrainConfig

from .data import Sample
from .metrics import dice
from .network import build_network, default_network_kwargs, load_network
from .postprocess import postprocess
from .spec import SegmenterSpec
from .transforms import train_transforms

log = logging.getLogger(__name__)

__all__ = [
    "MaskedDiceBCELoss",
    "TrainResult",
    "make_spec",
    "perturbed_copies",
    "score_samples",
    "train_segmenter",
]


class MaskedDiceBCELoss(nn.Module):
    """``dice_weight * MaskedDice + bce_weight * BCE``; pixels with ``ignore == 1`` do not count."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        """The weights of the two terms; a zero weight leaves its term out."""
        super().__init__()
        self.dice = MaskedDiceLoss(sigmoid=True, batch=True)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
        """The scalar loss; the BCE is a mean over the pixels that count."""
        keep = 1.0 - ignore
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target, mask=keep)
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=keep, reduction="sum")
            loss = loss + self.bce_weight * bce / keep.sum().clamp_min(1.0)
        return loss


@dataclass
class TrainResult:
    """Best model, its spec and the per-epoch history."""

    model: nn.Module
    spec: SegmenterSpec
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.nan
    stopped_early: bool = False
    seconds: float = 0.0


def make_spec(cfg: SegmenterTrainConfig) -> SegmenterSpec:
    """The spec (architecture + preprocessing) implied by a training config."""
    return SegmenterSpec(
        architecture=cfg.architecture,
        network=default_network_kwargs(cfg.architecture, tuple(cfg.channels), cfg.num_res_units),
        image_size=cfg.image_size,
        percentiles=cfg.percentiles,
    )


def _load_initial_weights(model: nn.Module, spec: SegmenterSpec, source: str) -> None:
    """Copy the weights of ``source`` ('shipped' or a path) into ``model``; the networks must be the same."""
    start, start_spec = load_network(None if source == "shipped" else source)

    def key(sp: SegmenterSpec) -> str:  # through JSON: a loaded spec holds lists where a new one has tuples
        return json.dumps([sp.architecture, sp.network, sp.image_size], sort_keys=True, default=list)

    if key(start_spec) != key(spec):
        raise ValueError(
            f"init_from {source!r} is a {start_spec.architecture} {start_spec.network} at "
            f"{start_spec.image_size} px; the training settings build a {spec.architecture} "
            f"{spec.network} at {spec.image_size} px: set the same architecture, channels, "
            "num_res_units and image_size"
        )
    model.load_state_dict(start.state_dict())


def _as_dict(s: Sample) -> dict[str, Any]:
    return {
        "image": torch.as_tensor(s.image)[None],
        "label": torch.as_tensor(s.label, dtype=torch.float32)[None],
        "ignore": torch.as_tensor(s.ignore, dtype=torch.float32)[None],
    }


def perturbed_copies(
    samples: Sequence[Sample], size: int, copies: int = 2, seed: int = 12345
) -> list[Sample]:
    """Fixed strongly-augmented copies of validation samples (same every epoch and every run)."""
    tf = train_transforms(size, "strong")
    out: list[Sample] = []
    for k in range(copies):
        tf.set_random_state(seed + k)
        for s in samples:
            d = tf(_as_dict(s))
            out.append(
                Sample(
                    f"{s.name}~p{k}",
                    s.patient_id,
                    s.source,
                    np.asarray(d["image"][0], dtype=np.float32),
                    (np.asarray(d["label"][0]) > 0.5).astype(np.uint8),
                    (np.asarray(d["ignore"][0]) > 0.5).astype(np.uint8),
                )
            )
    return out


@torch.inference_mode()
def score_samples(model: nn.Module, samples: Sequence[Sample], batch_size: int = 16) -> list[float]:
    """Per-sample Dice in network space (threshold 0.5, post-processed, ignore pixels excluded)."""
    model.eval()
    scores: list[float] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        x = torch.as_tensor(np.stack([s.image for s in chunk]))[:, None]
        prob = torch.sigmoid(model(x))[:, 0].numpy()
        for p, s in zip(prob, chunk, strict=True):
            scores.append(dice(postprocess(p > 0.5), s.label.astype(bool), s.ignore.astype(bool)))
    return scores


def _epoch_samples(
    real: Sequence[Sample], synthetic: Sequence[Sample], cfg: SegmenterTrainConfig, rng: np.random.Generator
) -> list[Sample]:
    items = list(real) * cfg.real_repeats
    if synthetic and cfg.synthetic_fraction > 0:
        k = (
            round(len(items) * cfg.synthetic_fraction / (1.0 - cfg.synthetic_fraction))
            if items
            else len(synthetic)
        )
        idx = rng.choice(len(synthetic), size=min(k, len(synthetic)), replace=False)
        items += [synthetic[i] for i in idx]
    return items


def _seed_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


def train_segmenter(
    train: Sequence[Sample],
    val: Sequence[Sample],
    cfg: SegmenterTrainConfig,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a segmenter on network-space samples; returns the best (or, without ``val``, the last) model.

    ``train`` may mix real and synthetic samples (``Sample.source``); synthetic ones make up
    ``cfg.synthetic_fraction`` of each epoch.
    """
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_determinism(seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    real = [s for s in train if s.source == "real"]
    synthetic = [s for s in train if s.source == "synthetic"]
    if not real and not synthetic:
        raise ValueError("no training samples")
    spec = make_spec(cfg)
    model = build_network(spec)
    if cfg.init_from is not None:
        _load_initial_weights(model, spec, cfg.init_from)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.epochs, eta_min=cfg.learning_rate * 0.02
    )
    loss_fn = MaskedDiceBCELoss(cfg.dice_weight, cfg.bce_weight)
    transform = train_transforms(cfg.image_size, cfg.augmentation, cfg.percentiles)
    val_perturbed = perturbed_copies(val, cfg.image_size) if val else []

    result = TrainResult(model=model, spec=spec)
    best_state: dict[str, torch.Tensor] | None = None
    best = -math.inf
    bar = tqdm(range(1, cfg.epochs + 1), desc="train-segmenter", unit="epoch", disable=not progress)
    for epoch in bar:
        te = time.perf_counter()
        items = _epoch_samples(real, synthetic, cfg, rng)
        loader = DataLoader(
            Dataset([_as_dict(s) for s in items], transform=transform),
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(items) > cfg.batch_size,
            num_workers=cfg.workers,
            worker_init_fn=_seed_worker if cfg.workers else None,
        )
        model.train()
        losses: list[float] = []
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"]), batch["label"], batch["ignore"])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        metrics: dict[str, float] = {
            "loss": float(np.mean(losses)) if losses else math.nan,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        if val:
            clean = float(np.mean(score_samples(model, val)))
            pert = float(np.mean(score_samples(model, val_perturbed)))
            metrics.update(val_dice=clean, val_dice_perturbed=pert, val_dice_mean=(clean + pert) / 2)
        metrics["epoch_seconds"] = time.perf_counter() - te
        result.history.append({"epoch": float(epoch), **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        bar.set_postfix(
            {k: f"{v:.3f}" for k, v in metrics.items() if k in ("loss", "val_dice", "val_dice_perturbed")}
        )
        if val:
            score = metrics[cfg.monitor]
            if score > best:
                best, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - result.best_epoch >= cfg.patience:
                result.stopped_early = True
                log.info(
                    "early stop at epoch %d (best %s %.4f at epoch %d)",
                    epoch,
                    cfg.monitor,
                    best,
                    result.best_epoch,
                )
                break
    if best_state is not None:
        model.load_state_dict(best_state)
        result.best_score = best
    else:
        result.best_epoch = len(result.history)
    result.model = model.eval()
    result.seconds = time.perf_counter() - t0
    return result
