"""Mask post-processing: keep the two largest connected components (the lungs), then fill holes.

Holes are filled with MONAI's :class:`~monai.transforms.FillHoles`. MONAI's
``KeepLargestConnectedComponent`` needs scikit-image, which is not a dependency of this project, so the
component selection uses :func:`scipy.ndimage.label` (same result, 8-connectivity).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import FillHoles
from scipy import ndimage

__all__ = [
    "FRAGMENT_MARGIN",
    "component_areas",
    "fill_holes",
    "fragment_fraction",
    "keep_largest_components",
    "postprocess",
]

_EIGHT = np.ones((3, 3), dtype=bool)
_FILL = FillHoles(applied_labels=[1], connectivity=1)


def component_areas(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label 8-connected components; returns ``(labels, areas)`` with ``areas[i]`` for label ``i + 1``."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, areas


def keep_largest_components(mask: np.ndarray, n: int = 2) -> np.ndarray:
    """The ``n`` largest 8-connected components of a boolean mask."""
    labels, areas = component_areas(mask)
    if areas.size <= n:
        return mask.astype(bool, copy=True)
    keep = np.argsort(areas, kind="stable")[-n:] + 1
    return np.isin(labels, keep)


FRAGMENT_MARGIN = 0.05
"""Stray predictions farther than this share of the image side from the kept lungs' box are not fragments."""


def fragment_fraction(raw: np.ndarray, kept: np.ndarray, margin: float = FRAGMENT_MARGIN) -> float:
    """Share of the thresholded prediction ``raw`` that post-processing dropped *near the kept lungs*.

    A piece of lung split off (a lung predicted in two parts) lies inside the kept lungs' bounding box, or
    just outside it: the mask then misses lung, and QC should say so. Blobs farther away (a dark corner,
    the air beside an arm, a marker box) are dropped without harm to the mask and are not counted: on the
    OpenIST radiographs they made the old measure (every dropped pixel) quarantine good masks (isnetflow
    ``bench masks``, docs/segmenter.md). ``margin`` is a share of the image's rows and columns.
    """
    area = int(raw.sum())
    if area == 0 or not kept.any():
        return 0.0
    rows, cols = raw.shape
    r = np.nonzero(kept.any(axis=1))[0]
    c = np.nonzero(kept.any(axis=0))[0]
    dr, dc = int(margin * rows), int(margin * cols)
    near = np.zeros_like(raw, dtype=bool)
    near[max(0, r[0] - dr) : r[-1] + dr + 1, max(0, c[0] - dc) : c[-1] + dc + 1] = True
    return float((raw & ~kept & near).sum() / area)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by the mask (MONAI FillHoles, 4-connected background)."""
    filled = _FILL(torch.as_tensor(mask[None].astype(np.uint8)))
    return np.asarray(filled[0]).astype(bool)


def postprocess(mask: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Keep the ``n_components`` largest components, then fill their holes."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if not mask.any():
        return mask.astype(bool, copy=True)
    return fill_holes(keep_largest_components(mask.astype(bool), n_components))
