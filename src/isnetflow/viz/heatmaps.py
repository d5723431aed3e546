"""Heatmap overlay galleries: image, lung outline and signed LRP relevance (red +, blue -)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from isnetflow.viz.figures import save_figure

__all__ = ["heatmap_gallery"]


def heatmap_gallery(
    images: np.ndarray,
    heatmaps: np.ndarray,
    masks: np.ndarray,
    titles: Sequence[str],
    png: str | Path,
    *,
    suptitle: str = "",
    cols: int = 4,
) -> Path:
    """Write a grid: each cell shows the image with its relevance map and the lung-mask outline.

    ``images``/``heatmaps``/``masks`` are ``(N, H, W)``. Relevance is scaled per image to its 99th
    percentile of |R| so that both positive (red) and negative (blue) evidence stay visible.
    """
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
        if k >= n:
            continue
        r = heatmaps[k].astype(np.float32)
        scale = float(np.percentile(np.abs(r), 99)) or 1e-12
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        ax.imshow(np.clip(r / scale, -1, 1), cmap="bwr", vmin=-1, vmax=1, alpha=0.55)
        ax.contour(masks[k] > 0.5, levels=[0.5], colors=["#39ff14"], linewidths=0.6)
        ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save_figure(fig, png, dpi=100)
