"""Quality control of lung masks: a mask that fails is quarantined with a reason, never used silently.

Checks (thresholds in :class:`isnetflow.config.MaskConfig`):

* ``area``: lung area / image area within ``[min_area_fraction, max_area_fraction]`` (empty, tiny or
  "everything is lung" masks fail);
* ``components``: exactly two lungs after post-processing (one lung, or a mask that is one blob, fails);
* ``sides``: the two components are side by side (left and right lung), not stacked (column ranges
  overlap by at most half the narrower one);
* ``balance``: smaller lung area / larger lung area >= ``min_lung_balance``;
* ``fragments``: share of the thresholded prediction dropped by post-processing *near the kept lungs*
  <= ``max_fragment_fraction`` (a lung predicted in pieces means the network was lost; blobs far from the
  lungs are dropped harmlessly and not counted, :func:`~isnetflow.masks.postprocess.fragment_fraction`);
* ``confidence``: mean probability margin around the lungs >= ``min_confidence`` (predictions only);
* ``mirror``: Dice between the mask and the mask of the mirrored image >= ``min_mirror_agreement``
  (predictions with the mirror check only, :func:`~isnetflow.masks.inference.mirror_agreement`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from isnetflow.config import MaskConfig

from .inference import Prediction
from .postprocess import component_areas

__all__ = ["MaskQC", "assess", "assess_prediction"]


@dataclass
class MaskQC:
    """QC measurements and decision for one mask."""

    area_fraction: float
    n_components: int
    lung_balance: float
    left_fraction: float  # share of the lung area in the image's left half (patient's right on PA)
    fragment_fraction: float
    confidence: float | None
    mirror_agreement: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no QC check failed."""
        return not self.failures

    @property
    def reason(self) -> str:
        """Semicolon-separated failure reasons ('' when passed)."""
        return "; ".join(self.failures)

    def to_row(self) -> dict[str, Any]:
        """Flat dict for the QC table."""
        row = asdict(self)
        row.pop("failures")
        row["qc_passed"] = self.passed
        row["qc_reason"] = self.reason
        return row


def assess(
    mask: np.ndarray,
    cfg: MaskConfig | None = None,
    *,
    fragment_fraction: float = 0.0,
    confidence: float | None = None,
    mirror_agreement: float | None = None,
) -> MaskQC:
    """Measure and judge a post-processed boolean mask (original resolution)."""
    cfg = cfg or MaskConfig()
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"expected a non-empty 2-D mask, got shape {mask.shape}")
    m = mask.astype(bool)
    area = float(m.mean())
    labels, areas = component_areas(m)
    n = int(areas.size)
    cols = m.shape[1]
    left = float(m[:, : cols // 2].sum() / max(1, m.sum()))
    failures: list[str] = []
    balance = 0.0
    if n >= 2:
        top2 = np.argsort(areas)[-2:] + 1
        a_small, a_big = sorted(float(areas[i - 1]) for i in top2)
        balance = a_small / a_big
        # Left and right lungs sit side by side: their column ranges barely overlap. Two pieces of one
        # lung (or lung + stomach bubble) are stacked. The image midline is not used: wide-field and
        # off-centre images put both lungs on one side of it.
        spans = [np.nonzero((labels == i).any(axis=0))[0] for i in top2]
        overlap = min(spans[0][-1], spans[1][-1]) - max(spans[0][0], spans[1][0]) + 1
        narrower = min(len(spans[0]), len(spans[1]))
        if overlap > 0.5 * narrower:
            failures.append(
                f"lung components stacked, not side by side ({overlap / narrower:.0%} column overlap)"
            )
    if area < cfg.min_area_fraction:
        failures.append(f"lung area {area:.1%} of the image < {cfg.min_area_fraction:.0%}")
    elif area > cfg.max_area_fraction:
        failures.append(f"lung area {area:.1%} of the image > {cfg.max_area_fraction:.0%}")
    if n != 2:
        failures.append(f"{n} lung component(s), expected 2")
    elif balance < cfg.min_lung_balance:
        failures.append(f"lung size balance {balance:.2f} < {cfg.min_lung_balance:.2f} (one lung missing?)")
    if fragment_fraction > cfg.max_fragment_fraction:
        failures.append(
            f"fragmented: {fragment_fraction:.1%} of the predicted area split off near the lungs "
            f"> {cfg.max_fragment_fraction:.0%}"
        )
    if confidence is not None and confidence < cfg.min_confidence:
        failures.append(f"low confidence {confidence:.2f} < {cfg.min_confidence:.2f}")
    if (
        mirror_agreement is not None
        and cfg.min_mirror_agreement is not None
        and mirror_agreement < cfg.min_mirror_agreement
    ):
        failures.append(
            f"unstable: the mirrored image's mask agrees at Dice {mirror_agreement:.2f} "
            f"< {cfg.min_mirror_agreement:.2f}"
        )
    return MaskQC(
        area_fraction=area,
        n_components=n,
        lung_balance=float(balance),
        left_fraction=left,
        fragment_fraction=float(fragment_fraction),
        confidence=None if confidence is None else float(confidence),
        mirror_agreement=None if mirror_agreement is None else float(mirror_agreement),
        failures=failures,
    )


def assess_prediction(pred: Prediction, cfg: MaskConfig | None = None) -> MaskQC:
    """:func:`assess` a segmenter's prediction with every measurement it carries."""
    return assess(
        pred.mask,
        cfg,
        fragment_fraction=pred.fragment_fraction,
        confidence=pred.confidence,
        mirror_agreement=pred.mirror_agreement,
    )
