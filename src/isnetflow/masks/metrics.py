"""Overlap and boundary metrics that exclude the 'ignore' pixels (127 in reference masks).

Both use MONAI (:class:`~monai.metrics.DiceMetric`, :class:`~monai.metrics.HausdorffDistanceMetric`).
Ignored pixels are removed from prediction and reference alike, so they count neither as lung nor as
background.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

__all__ = ["dice", "hausdorff95", "summarize"]


def _pair(
    pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and reference {target.shape} differ in shape")
    keep = np.ones(pred.shape, dtype=bool) if ignore is None else ~ignore.astype(bool)
    p = torch.as_tensor((pred.astype(bool) & keep)[None, None].astype(np.float32))
    t = torch.as_tensor((target.astype(bool) & keep)[None, None].astype(np.float32))
    return p, t


def dice(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Dice of two boolean masks, ignoring ``ignore`` pixels; 1.0 when both are empty."""
    p, t = _pair(pred, target, ignore)
    if not p.any() and not t.any():
        return 1.0
    value = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)
    return float(torch.as_tensor(value).reshape(-1)[0])


def hausdorff95(
    pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None, spacing: float = 1.0
) -> float:
    """95th-percentile symmetric Hausdorff distance (in ``spacing`` units); ``inf`` if one mask is empty."""
    p, t = _pair(pred, target, ignore)
    if not p.any() or not t.any():
        return 0.0 if not p.any() and not t.any() else math.inf
    metric = HausdorffDistanceMetric(include_background=True, percentile=95.0, reduction="none")
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        value = metric(p, t, spacing=spacing)
    return float(torch.as_tensor(value).reshape(-1)[0])


def summarize(values: list[float]) -> dict[str, float]:
    """Mean, sd, median, min and n of finite values (NaN entries when there are none)."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"mean": math.nan, "sd": math.nan, "median": math.nan, "min": math.nan, "n": 0}
    return {
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "n": int(arr.size),
    }
