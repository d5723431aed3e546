"""The terms of the ISNet heatmap loss (Bassi et al., Nature Communications 2024).

The objective that combines them, ``(1 - P) * CE + P * (A * L_bg + B * L_fg)``, is
:mod:`isnetflow.isnet.objective`. The terms are computed per heatmap and averaged over the heatmaps of
a sample (one map per sample for the "selective" and "stochastic" variants, one per class for "all") and
over the batch, following the authors' ``LRPLossCEValleysGWRP``:

* ``|R|`` is normalised per map by its mean inside the lung mask (``sum(|R| m) / (sum(m) + 1e-10)``,
  plus ``1e-10``).
* Background: ``b = GWRP_d`` of the normalised ``|R|`` with the in-mask pixels set to zero, pooled per
  image channel over all spatial positions (sorted descending, weights ``d**i`` normalised to sum 1;
  ``d = 0`` is the maximum, ``d = 1`` the mean) and averaged over channels;
  ``L_bg = -log(1 - min(b / (b + E), 1 - 1e-7))`` (``= log(1 + b / E)`` until the clamp).
* Foreground: on the *un-normalised absolute* in-mask relevance ``S = sum(|R| m)`` (the authors use
  ``|R|``, not the signed sum): ``L_fg = ((min(S, C1) - C1)**2 + (max(S, C2) - C2)**2) / C1**2`` keeps
  the relevance mass inside ``[C1, C2]``.

:class:`ForegroundRangeEstimator` derives ``C1``/``C2`` from heatmaps of a conventionally trained network
as the authors do (Welford statistics of the per-sample total absolute relevance;
``C1 = max(mean / 5, mean - 3 std)``, ``C2 = min(25 C1, mean + 3 std)``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "ForegroundRangeEstimator",
    "background_loss",
    "foreground_loss",
    "global_weighted_rank_pooling",
]

NORM_EPS = 1e-10
"""Added to the mask pixel count and to the in-mask mean in the per-map normalisation."""
BG_CLAMP = 1e-7
"""``b / (b + E)`` is clamped to ``1 - BG_CLAMP`` before the logarithm."""


def global_weighted_rank_pooling(x: Tensor, d: float, dim: int = -1) -> Tensor:
    """Global weighted rank pooling along ``dim``.

    Values are sorted in descending order and averaged with weights ``d**i`` (``i = 0, 1, ...``)
    normalised to sum to one; ``d = 0`` yields the maximum, ``d = 1`` the mean.

    For ``0 < d < 1`` only the ``k`` largest values are gathered (``torch.topk``), with ``k`` the first
    index where ``d**k`` drops below the square of the dtype's machine epsilon; the omitted terms are
    below floating-point rounding of the result, and a full sort is avoided. The normalisation always
    uses all ``n`` weights.
    """
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"d must be in [0, 1], got {d}")
    values = x.movedim(dim, -1)
    n = values.shape[-1]
    if n == 0:
        raise ValueError("cannot pool an empty dimension")
    if d == 1.0:
        return values.mean(-1)
    k = n
    if d == 0.0:
        k = 1
    else:
        cutoff = math.log(torch.finfo(x.dtype).eps ** 2) / math.log(d)
        k = min(n, math.ceil(cutoff) + 1)
    top = torch.topk(values, k, dim=-1, largest=True, sorted=True).values
    weights = torch.pow(torch.full((k,), d, dtype=x.dtype, device=x.device), torch.arange(k, device=x.device))
    total = (1.0 - d**n) / (1.0 - d)  # sum of d**i for i < n
    return (top * weights).sum(-1) / total


def _as_maps(heatmaps: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Return heatmaps as ``(B, K, C, H, W)`` and masks as ``(B, 1, C or 1, H, W)`` in their dtype."""
    if heatmaps.dim() == 4:
        maps = heatmaps.unsqueeze(1)
    elif heatmaps.dim() == 5:
        maps = heatmaps
    else:
        raise ValueError(f"heatmaps must be (B, C, H, W) or (B, K, C, H, W), got {tuple(heatmaps.shape)}")
    if masks is None:
        return maps, None
    if masks.dim() == 3:
        m = masks[:, None, None]
    elif masks.dim() == 4:
        m = masks[:, None]
    else:
        raise ValueError(f"masks must be (B, H, W) or (B, 1 or C, H, W), got {tuple(masks.shape)}")
    if m.shape[0] != maps.shape[0] or m.shape[-2:] != maps.shape[-2:] or m.shape[2] not in (1, maps.shape[2]):
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not fit heatmaps {tuple(heatmaps.shape)}")
    return maps, m.to(maps.dtype)


def background_loss(heatmaps: Tensor, masks: Tensor, *, d: float, E: float, norm: str = "abs") -> Tensor:
    """Per-sample ISNet background loss ``-log(1 - b / (b + E))`` (mean over maps and channels).

    Parameters
    ----------
    heatmaps
        ``(B, C, H, W)`` (one map per sample) or ``(B, K, C, H, W)`` (``K`` maps per sample) relevance.
    masks
        Binary foreground (lung) masks (1 inside), ``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, C, H, W)``;
        float or bool, same spatial size as the heatmaps.
    d, E
        GWRP decay and activation constant.
    norm
        ``"abs"`` (the authors' ``absRoIMean``): ``|R|`` divided by the in-mask mean of ``|R|``.
        ``"signed"`` (the authors' ``RoIMean``): ``|R / mean_in(R)|``, the in-mask mean of the *signed*
        relevance, so positive and negative in-lung relevance that cancel out (a checkerboard carrying no
        net evidence) cannot lower the background term, as it can with ``"abs"``.

    Returns
    -------
    torch.Tensor
        ``(B,)`` losses.
    """
    maps, m = _as_maps(heatmaps, masks)
    assert m is not None
    if norm not in ("abs", "signed"):
        raise ValueError(f"norm must be 'abs' or 'signed', got {norm!r}")
    absolute = maps.abs()
    reduce_dims = tuple(range(2, maps.dim()))
    count = m.expand_as(absolute).sum(reduce_dims, keepdim=True) + NORM_EPS
    if norm == "abs":
        normalised = absolute / ((absolute * m).sum(reduce_dims, keepdim=True) / count + NORM_EPS)
    else:
        inside_mean = (maps * m).sum(reduce_dims, keepdim=True) / count
        normalised = (maps / (inside_mean.abs() + NORM_EPS)).abs()
    outside = (normalised * (1 - m)).flatten(3)
    b = global_weighted_rank_pooling(outside, d)  # (B, K, C)
    activation = torch.clamp(b / (b + E), max=1 - BG_CLAMP)
    return (-torch.log1p(-activation)).mean(dim=(1, 2))


def foreground_loss(heatmaps: Tensor, masks: Tensor, *, C1: float, C2: float) -> Tensor:
    """Per-sample ISNet foreground loss ``((min(S,C1)-C1)^2 + (max(S,C2)-C2)^2) / C1^2``, mean over maps.

    ``S`` is the sum of the absolute relevance inside the mask of each map (not normalised).
    Shapes as in :func:`background_loss`; returns ``(B,)``.
    """
    maps, m = _as_maps(heatmaps, masks)
    assert m is not None
    s = (maps.abs() * m).sum(dim=tuple(range(2, maps.dim())))  # (B, K)
    low = torch.clamp(s, max=C1) - C1
    high = torch.clamp(s, min=C2) - C2
    return ((low * low + high * high) / (C1 * C1)).mean(dim=1)


class ForegroundRangeEstimator:
    """Welford statistics of heatmap relevance mass giving the foreground range ``(C1, C2)``.

    Feed heatmaps of a conventionally trained network (a "warm-up" of standard training, built with the
    same LRP variant as the ISNet training will use). Following the authors, each sample contributes one
    value: the total absolute relevance of its map(s) over the whole image (mean over the sample's maps);
    with ``region="mask"`` only in-mask relevance is counted (the quantity ``S`` the foreground term
    constrains). Then ``C1 = max(mean / 5, mean - 3 std)`` and ``C2 = min(25 C1, mean + 3 std)`` with the
    sample standard deviation.
    """

    def __init__(self, region: Literal["image", "mask"] = "image") -> None:
        """Empty statistics; ``region`` is where relevance is counted: the whole image or the mask."""
        if region not in ("image", "mask"):
            raise ValueError("region must be 'image' or 'mask'")
        self.region = region
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def update(self, heatmaps: Tensor, masks: Tensor | None = None) -> None:
        """Add the samples of one batch (shapes as in :func:`background_loss`; masks only for "mask")."""
        if self.region == "mask" and masks is None:
            raise ValueError("region='mask' needs masks")
        maps, m = _as_maps(heatmaps, masks if self.region == "mask" else None)
        absolute = maps.detach().abs()
        if m is not None:
            absolute = absolute * m
        totals = absolute.sum(dim=tuple(range(2, absolute.dim()))).mean(dim=1)
        for value in totals.double().cpu().tolist():
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (value - self.mean)

    def state(self) -> tuple[int, float, float]:
        """``(count, mean, M2)``: what :meth:`merge` needs from another estimator (e.g. another rank's)."""
        return self.count, self.mean, self._m2

    def merge(self, count: int, mean: float, m2: float) -> None:
        """Add the statistics of another estimator's samples (Chan et al.'s parallel Welford update)."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self._m2 += m2 + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def std(self) -> float:
        """Sample standard deviation of the collected values (needs two or more samples)."""
        if self.count < 2:
            raise ValueError("need at least two samples")
        return math.sqrt(self._m2 / (self.count - 1))

    def result(self) -> tuple[float, float]:
        """Return ``(C1, C2)``."""
        mean, std = self.mean, self.std
        c1 = max(mean / 5.0, mean - 3.0 * std)
        c2 = min(25.0 * c1, mean + 3.0 * std)
        if not c1 > 0:
            raise ValueError("relevance mass statistics are not positive; cannot derive C1")
        return c1, c2
