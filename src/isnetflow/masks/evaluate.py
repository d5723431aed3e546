"""Evaluation of a lung segmenter at the images' original resolution.

:func:`evaluate` reports Dice and 95th-percentile Hausdorff distance (ignore pixels excluded) on clean
images and on each named perturbation of :mod:`isnetflow.masks.robustness`. :func:`synthetic_items`
builds phantom test items from :mod:`isnetflow.synth` with both mask conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .inference import LungSegmenter
from .metrics import dice, hausdorff95, summarize
from .robustness import PERTURBATIONS, perturb

__all__ = ["EvalItem", "evaluate", "synthetic_items"]


@dataclass
class EvalItem:
    """One test image at original resolution with its reference mask."""

    name: str
    image: np.ndarray
    lung: np.ndarray
    ignore: np.ndarray


def _score(
    seg: LungSegmenter, items: Sequence[EvalItem], with_hd: bool, desc: str, progress: bool
) -> dict[str, Any]:
    dices: dict[str, float] = {}
    hds: list[float] = []
    preds = seg.predict_prepared([seg.prepare(it.image) for it in items])
    for it, pred in tqdm(zip(items, preds, strict=False), total=len(items), desc=desc, disable=not progress):
        dices[it.name] = dice(pred.mask, it.lung, it.ignore)
        if with_hd:
            hds.append(hausdorff95(pred.mask, it.lung, it.ignore))
    out: dict[str, Any] = {"dice": summarize(list(dices.values())), "per_image": dices}
    if with_hd:
        out["hd95_px"] = summarize(hds)
    return out


def evaluate(
    seg: LungSegmenter,
    items: Sequence[EvalItem],
    perturbations: Sequence[str] | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Dice / HD95 on ``items`` and Dice under each perturbation (all of them when None).

    Returns ``{"clean": {...}, "perturbed": {name: {"dice": summary}}, "perturbed_all": summary}`` where
    a summary is ``{mean, sd, median, min, n}`` and ``perturbed_all`` pools every perturbed image.
    """
    report: dict[str, Any] = {"clean": _score(seg, items, True, "eval clean", progress), "perturbed": {}}
    names = list(PERTURBATIONS) if perturbations is None else list(perturbations)
    pooled: list[float] = []
    for name in names:
        moved = []
        for i, it in enumerate(items):
            im, lu, ig = perturb(name, it.image, it.lung, it.ignore, seed=seed + i)
            moved.append(EvalItem(it.name, im, lu, ig))
        res = _score(seg, moved, False, f"eval {name}", False)
        report["perturbed"][name] = {"dice": res["dice"]}
        pooled += list(res["per_image"].values())
    if names:
        report["perturbed_all"] = summarize(pooled)
    return report


def synthetic_items(n: int, *, seed: int = 0, size: int = 256) -> tuple[list[EvalItem], list[EvalItem]]:
    """Phantoms of the default cohort generator (seed ``seed``) as two item lists sharing images:
    the phantom convention (heart cut out) and the real convention (lung under the heart ignored).

    The images are the generator's display images (what the DICOM reader returns after windowing).
    """
    from isnetflow.config import SynthConfig
    from isnetflow.synth import plan_cohort, render_item

    from .data import heart_envelope_ignore

    cfg = SynthConfig(n=n, size=max(64, size), seed=seed, workers=1)
    raw: list[EvalItem] = []
    adjusted: list[EvalItem] = []
    for item in plan_cohort(cfg):
        r = render_item(item, cfg)
        none = np.zeros(r.lung.shape, dtype=bool)
        heart = heart_envelope_ignore(item, r.lung)
        raw.append(EvalItem(item.sop_uid, r.presentation, r.lung, none))
        adjusted.append(EvalItem(item.sop_uid, r.presentation, r.lung, none if heart is None else heart))
    return raw, adjusted
