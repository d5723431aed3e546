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

__all__ = ["component_areas", "fill_holes", "keep_largest_components", "postprocess"]

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
