"""The shrunk settings the tests share (one definition each): a tiny training config, a fast evaluation
and the promotion policies that always pass or always fail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isnetflow.config import EvaluateConfig, PromotionPolicy, TrainConfig


def tiny_train_cfg(mode: str = "standard", **update: Any) -> TrainConfig:
    """The small plain CNN at 48 px, two epochs (one warm-up), one thread, no audit, no checkpoints;
    ``update`` overrides fields (a test that needs checkpoints or the audit sets them)."""
    base: dict[str, Any] = {
        "mode": mode,
        "model": "cnn-small",
        "image_size": 48,
        "batch_size": 8,
        "epochs": 2,
        "warmup_epochs": 1,
        "val_fraction": 0.3,
        "test_fraction": 0.2,
        "audit_samples": 0,
        "num_threads": 1,
        "device": "cpu",
        "checkpoint_every": 100,
    }
    return TrainConfig(**{**base, **update})


#: an evaluation small enough for tests (few bootstrap rounds, few audited / swapped images)
FAST_EVALUATE = EvaluateConfig(n_boot=100, audit_per_site=2, counterfactual_max=40, gallery_per_group=1)


#: the promotion policy's gate thresholds that every candidate passes (each gate enabled)
GATE_POLICY = PromotionPolicy(
    min_external_auc_ci_low=0.70,
    max_auc_gap=0.10,
    max_background_share=0.40,
    max_flip_rate=0.10,
    min_site_auc=0.65,
    max_auc_drop_vs_champion=0.01,
    max_auc_drop_vs_standard=0.05,
)
"""The thresholds the crafted-evaluation gate tests are written against (spelled out, not the defaults)."""

LENIENT_GATES: dict[str, float] = {
    "min_external_auc_ci_low": 0.0,
    "max_auc_gap": 1.0,
    "max_background_share": 1.0,
    "max_flip_rate": 1.0,
    "min_site_auc": 0.0,
    "max_auc_drop_vs_champion": 1.0,
    "max_auc_drop_vs_standard": 1.0,
}


def lenient_policy(**update: Any) -> PromotionPolicy:
    """A policy every candidate passes (:data:`LENIENT_GATES`, a 30 s promotion-lock wait)."""
    return PromotionPolicy(**{**LENIENT_GATES, "lock_wait_seconds": 30, **update})


def strict_policy(**update: Any) -> PromotionPolicy:
    """A policy no tiny test model passes (external AUC CI low >= 0.99, no background relevance)."""
    return lenient_policy(**{"min_external_auc_ci_low": 0.99, "max_background_share": 0.0, **update})


@dataclass(frozen=True)
class Trained:
    """One tiny trained model (the ``eval_trained`` fixture): its data, config, summary and store."""

    validated: Path
    masks: Path
    train_cfg: TrainConfig
    summary: dict[str, Any]
    tracking_uri: str
    root: Path
