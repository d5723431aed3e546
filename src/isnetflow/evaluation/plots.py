"""Evaluation figures (PNG): ROC curves per site, reliability diagram, counterfactual examples.

The heatmap gallery reuses :func:`isnetflow.viz.heatmaps.heatmap_gallery`. Every function writes one PNG
to the path it is given and returns that path (the stage decides where files go).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from isnetflow.evaluation.metrics import ReliabilityCurve, auc_or_nan
from isnetflow.viz.figures import save_figure

__all__ = ["counterfactual_figure", "reliability_figure", "roc_figure"]


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    png: str | Path,
    *,
    title: str = "ROC curves",
    emphasize: Sequence[str] = ("internal test", "external pooled"),
) -> Path:
    """One ROC curve per entry ``name -> (binary targets, scores)``; single-class entries are listed only."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
    skipped = []
    for name, (y, s) in curves.items():
        y = np.asarray(y)
        if y.size == 0 or np.unique(y).size < 2:
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(y, s)
        strong = name in emphasize
        ax.plot(
            fpr,
            tpr,
            lw=2.2 if strong else 1.1,
            ls="-" if strong else "-.",
            label=f"{name} (AUC {auc_or_nan(y, s):.3f}, n={y.size})",
        )
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    note = textwrap.fill(f"(single class, no curve: {', '.join(skipped)})", 90) if skipped else ""
    ax.set_title(textwrap.fill(title, 90) + ("\n" + note if note else ""), fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, png)


def reliability_figure(
    curves: Mapping[str, ReliabilityCurve], png: str | Path, *, title: str = "Reliability diagram"
) -> Path:
    """Observed positive rate vs mean predicted score per bin (marker area ~ bin count)."""
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--", label="perfect calibration")
    for name, c in curves.items():
        if not c.count:
            continue
        sizes = 12 + 200 * np.asarray(c.count) / max(c.count)
        (line,) = ax.plot(c.mean_score, c.observed_rate, lw=1.2, label=name)
        ax.scatter(c.mean_score, c.observed_rate, s=sizes, color=line.get_color(), alpha=0.6)
    ax.set_xlabel("mean predicted score (positive class)")
    ax.set_ylabel("observed positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, png)


def counterfactual_figure(
    originals: np.ndarray,
    donors: np.ndarray,
    composites: np.ndarray,
    captions: Sequence[str],
    png: str | Path,
    *,
    title: str = "Counterfactual background swap: recipient | donor | composite",
) -> Path:
    """Rows of (recipient, donor, composite) images ``(n, H, W)`` with one caption per row."""
    n = len(originals)
    fig, axes = plt.subplots(max(n, 1), 3, figsize=(7.5, 2.5 * max(n, 1)), squeeze=False)
    for k in range(max(n, 1)):
        for j in range(3):
            ax = axes[k, j]
            ax.axis("off")
            if k >= n:
                continue
            img = (originals, donors, composites)[j][k]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if j == 1:
                ax.set_title(captions[k], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, png)
