"""Learning curves of one training run: losses, gradient balance, foreground range and validation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from isnetflow.viz.figures import save_figure

__all__ = ["learning_curves"]

_PANELS: tuple[tuple[str, tuple[tuple[str, str], ...], bool], ...] = (
    ("losses (train)", (("train_ce", "cross-entropy"), ("train_background", "L_bg"),
                        ("train_foreground", "L_fg"), ("val_ce", "val cross-entropy")), True),
    ("gradient norms (per step, mean)", (("train_grad_norm_ce", "(1-P)·∇CE"),
                                         ("train_grad_norm_heatmap", "P·∇heatmap")), True),
    ("gradient balance", (("train_grad_cosine", "cosine(∇CE, ∇heatmap)"),
                          ("train_heatmap_grad_scale", "heatmap scale applied")), False),
    ("foreground range", (("train_share_below_c1", "share S < C1"),
                          ("train_share_above_c2", "share S > C2")), False),
    ("validation", (("val_auc", "AUC"), ("val_background_share", "background share"),
                    ("val_swap_change", "|Δscore| background swap")), False),
)  # fmt: skip


def learning_curves(history: Sequence[Mapping[str, float]], png: str | Path, *, title: str = "") -> Path:
    """Write a row of panels of the per-epoch ``history`` (the training loop's metrics) to ``png``.

    Missing metrics (e.g. the heatmap terms of a standard run, or of an ISNet's warm-up epochs) are
    left out; the epochs where the heatmap loss is on are shaded.
    """
    epochs = [int(h["epoch"]) for h in history]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(3.6 * len(_PANELS), 3.0), squeeze=False)
    heat = [e for e, h in zip(epochs, history, strict=True) if h.get("heatmap_loss_on", 0.0) > 0]
    for ax, (name, series, log_scale) in zip(axes[0], _PANELS, strict=True):
        drawn = False
        for key, label in series:
            pts = [(e, float(h[key])) for e, h in zip(epochs, history, strict=True)
                   if key in h and math.isfinite(float(h[key]))]  # fmt: skip
            if pts and (not log_scale or all(v > 0 for _, v in pts)):
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
                drawn = True
        if drawn and log_scale:
            ax.set_yscale("log")
        if heat:
            ax.axvspan(min(heat) - 0.5, max(heat) + 0.5, color="#ffcc66", alpha=0.18, lw=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, png, dpi=90)
