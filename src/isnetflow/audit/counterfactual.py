"""Counterfactual background test: the same lungs on another hospital's background.

Construction
------------
For a *recipient* image A (whose lungs we keep) and a *donor* image B (whose background we borrow), with
lung masks ``mA`` and ``mB`` at the same (letterboxed) resolution::

    region    = mA OR mB                     (union of the two lung masks)
    composite = A inside region, B outside region

Everything outside the union comes from B, so every background cue of B (burned-in text, markers, the
planted tag, collimation, letterbox bars) is present, and nothing of B's lungs survives -- B's lungs lie
inside ``mB``, which is inside the region, where the pixels are A's. Inside the region the image is
entirely A: A's lungs plus the rim of A's own soft tissue where ``mB`` extends beyond ``mA``. The
composite's lung mask is ``mA``. A cue of A that happens to lie inside ``mB`` would survive; the cues
of the synthetic cohort (and real burned-in annotations) sit at the image border, far from the lungs.

Pairing
-------
Each recipient gets one donor from a *different site*. With ``"opposite_label"`` (default) the donor has
the other label when one is available: a background cue that is label-correlated then points the wrong
way, which is the sharpest test. ``"random"`` draws any donor from another site. Donors are drawn with a
seeded generator, so the test is reproducible.

Outcome
-------
``flip_rate``: share of recipients whose predicted label (score >= threshold) changes between the
original and the composite; ``mean_abs_score_change``: mean ``|score(composite) - score(original)|``.
A classifier that reads only the lungs has both near zero; one that reads the background does not.
The flip rate depends on the threshold: a poorly separating model whose scores crowd around the
threshold flips on small score changes, so read it together with the mean score change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["CounterfactualResult", "Pairing", "choose_donors", "counterfactual_test", "swap_background"]

Pairing = Literal["opposite_label", "random"]


def swap_background(
    image_a: np.ndarray, mask_a: np.ndarray, image_b: np.ndarray, mask_b: np.ndarray
) -> np.ndarray:
    """A's pixels inside ``mask_a | mask_b``, B's pixels outside (see the module docstring).

    All arrays share one shape (e.g. ``(1, H, W)`` or ``(H, W)``); mask values > 0.5 are lung.
    """
    if not (image_a.shape == image_b.shape == mask_a.shape == mask_b.shape):
        raise ValueError(
            f"shapes differ: image_a {image_a.shape}, mask_a {mask_a.shape}, "
            f"image_b {image_b.shape}, mask_b {mask_b.shape}"
        )
    region = (np.asarray(mask_a) > 0.5) | (np.asarray(mask_b) > 0.5)
    return np.where(region, image_a, image_b).astype(image_a.dtype, copy=False)


def choose_donors(
    sites: Sequence[str],
    labels: Sequence[int],
    recipients: Sequence[int],
    candidates: Sequence[int],
    *,
    pairing: Pairing = "opposite_label",
    seed: int = 0,
) -> list[int | None]:
    """For each recipient index, a donor index among ``candidates`` from another site (``None``: none).

    ``sites``/``labels`` are per image (indexed by the recipient/candidate indices); labels are
    binary targets (0 negative, 1 positive).
    """
    rng = np.random.default_rng(seed)
    cand = np.asarray(list(candidates), dtype=np.int64)
    cand_sites = np.asarray([sites[i] for i in cand], dtype=object)
    cand_labels = np.asarray([labels[i] for i in cand], dtype=np.int64)
    donors: list[int | None] = []
    for r in recipients:
        other = cand_sites != sites[r]
        pool = cand[other]
        if pairing == "opposite_label":
            opposite = cand[other & (cand_labels != labels[r])]
            if opposite.size:
                pool = opposite
        elif pairing != "random":
            raise ValueError(f"unknown pairing {pairing!r}")
        donors.append(int(rng.choice(pool)) if pool.size else None)
    return donors


@dataclass(frozen=True)
class CounterfactualResult:
    """Outcome of :func:`counterfactual_test` (per pair and summarized)."""

    recipients: list[int]
    donors: list[int]
    original_scores: list[float]
    composite_scores: list[float]
    flipped: list[bool]
    threshold: float
    pairing: str
    per_site: dict[str, dict[str, float | int]] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        """Number of recipient/donor pairs tested."""
        return len(self.recipients)

    @property
    def flip_rate(self) -> float:
        """Share of pairs whose decision at ``threshold`` flipped (NaN without pairs)."""
        return float(np.mean(self.flipped)) if self.flipped else math.nan

    @property
    def mean_abs_score_change(self) -> float:
        """Mean absolute change of the score from original to composite image (NaN without pairs)."""
        if not self.recipients:
            return math.nan
        return float(np.mean(np.abs(np.subtract(self.composite_scores, self.original_scores))))

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (``flip_rate``, ``mean_abs_score_change``, ``n_pairs``, ``per_site``...)."""
        return {
            "flip_rate": self.flip_rate,
            "mean_abs_score_change": self.mean_abs_score_change,
            "n_pairs": self.n_pairs,
            "threshold": self.threshold,
            "pairing": self.pairing,
            "construction": "recipient pixels inside the union of both lung masks, donor pixels outside",
            "per_site": self.per_site,
        }


ScoreFn = Callable[[np.ndarray], np.ndarray]


def counterfactual_test(
    score_fn: ScoreFn,
    images: np.ndarray,
    masks: np.ndarray,
    sites: Sequence[str],
    labels: Sequence[int],
    recipients: Sequence[int],
    candidates: Sequence[int],
    *,
    threshold: float,
    pairing: Pairing = "opposite_label",
    seed: int = 0,
    original_scores: np.ndarray | None = None,
) -> CounterfactualResult:
    """Swap backgrounds and measure how predictions move.

    ``score_fn`` maps an image batch ``(n, 1, H, W)`` to positive-class scores ``(n,)``. ``images`` and
    ``masks`` are ``(N, 1, H, W)`` arrays indexed by ``recipients``/``candidates``. ``original_scores``
    (scores of all N images) avoids re-scoring the originals when the caller has them.
    """
    donors = choose_donors(sites, labels, recipients, candidates, pairing=pairing, seed=seed)
    pairs = [(r, d) for r, d in zip(recipients, donors, strict=True) if d is not None]
    if not pairs:
        return CounterfactualResult([], [], [], [], [], threshold, pairing)
    rec = np.asarray([r for r, _ in pairs], dtype=np.int64)
    don = np.asarray([d for _, d in pairs], dtype=np.int64)
    composites = np.stack(
        [swap_background(images[r], masks[r], images[d], masks[d]) for r, d in zip(rec, don, strict=True)]
    )
    orig = np.asarray(original_scores)[rec] if original_scores is not None else score_fn(images[rec])
    comp = np.asarray(score_fn(composites), dtype=np.float64)
    orig = np.asarray(orig, dtype=np.float64)
    flipped = (orig >= threshold) != (comp >= threshold)
    per_site: dict[str, dict[str, float | int]] = {}
    rec_sites = np.asarray([sites[i] for i in rec], dtype=object)
    for site in sorted(set(rec_sites)):
        sel = rec_sites == site
        per_site[str(site)] = {
            "flip_rate": float(flipped[sel].mean()),
            "mean_abs_score_change": float(np.abs(comp[sel] - orig[sel]).mean()),
            "n_pairs": int(sel.sum()),
        }
    return CounterfactualResult(
        recipients=[int(v) for v in rec],
        donors=[int(v) for v in don],
        original_scores=[float(v) for v in orig],
        composite_scores=[float(v) for v in comp],
        flipped=[bool(v) for v in flipped],
        threshold=float(threshold),
        pairing=pairing,
        per_site=per_site,
    )
