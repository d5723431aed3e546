"""``isnetflow bench masks``: the lung segmenter and its QC judged against human masks on real radiographs.

Each *source* is a folder of real radiographs with human lung masks. For every image the production
path runs (:class:`~isnetflow.masks.inference.LungSegmenter` then :func:`~isnetflow.masks.qc.assess`,
exactly as the mask stage and ``isnetflow segment`` do), and the mask is compared with the human one:

* **Dice** at the image's original resolution, the reference's *ignore* pixels excluded;
* **the QC's decisions against that truth**: a mask is *bad* when its Dice is below
  :data:`BAD_DICE` (0.85). ``good_quarantined`` is the share of good masks the QC refused (a lost
  image), ``bad_caught`` the share of bad masks it refused (a wrong mask that did not reach training).

Sources differ in their mask *convention* (:data:`CONVENTIONS`). The shipped segmenter follows the v7labs
convention (the lung behind the heart and below the diaphragm dome is lung); JSRT-style masks (OpenIST)
cut the heart out. Against a JSRT mask the region the two conventions disagree on (the convex hull of the
two reference lungs minus the lungs: mediastinum and heart) is excluded from Dice, so a convention is not
counted as an error; spills into the neck, the shoulders or an arm still count. The raw Dice is reported
beside it.

With ``perturb`` every unseen image (all of a source the segmenter was not trained on, the held-out ones
of a source it was) is also judged after the strong, fixed perturbations of
:mod:`isnetflow.masks.robustness` (other hospitals' tone curves, noise, zoom, crops, markers): real images
with real masks, and many more bad masks for the QC to catch than the clean images give.

Known sources (:data:`SOURCES`) are laid out as shipped: ``hannover`` (``../shared/data/real-cxr-lungs``:
``manifest.csv`` with image, mask and patient_id; the segmenter's training data, so its held-out patients
are reported apart) and ``openist`` (a clone of pi-null-mezon/OpenIST: ``Datasets/Chest_x-ray/<n>.jpg``
with ``<n>@.png``) and ``cohen`` (the V7 Labs masks of the COVID-19 image data collection outside Hannover,
a ``manifest.csv`` folder built by ``examples/public-cxr/build_mask_truth.py``; its ``val`` patients are
the held-out ones). Any other name takes a folder in either layout.
"""

from __future__ import annotations

import ast
import csv
import platform
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from isnetflow.config import MaskConfig
from isnetflow.masks.metrics import summarize

__all__ = [
    "BAD_DICE",
    "CONVENTIONS",
    "SOURCES",
    "TARGETS",
    "MaskSource",
    "TruthPair",
    "bench_masks",
    "convention_ignore",
    "find_truth_pairs",
    "parse_source",
]

BAD_DICE = 0.85
"""A mask with Dice below this against the human mask is *bad* (issue 26)."""

PERTURB_DRAW_STRIDE = 1_000_000
"""Seed offset between two draws of the perturbations (``draw``): larger than any ``1000 * kind + image``."""

TARGETS = {"max_good_quarantined": 0.02, "min_bad_caught": 0.80, "min_mean_dice": 0.93}
"""The targets each real source is judged against (issue 26): shares, and Dice of the held-out images."""

Convention = Literal["v7labs", "jsrt"]
CONVENTIONS: dict[str, str] = {
    "v7labs": "lung behind the heart and below the diaphragm dome is lung (the shipped segmenter's)",
    "jsrt": "heart and mediastinum cut out: the hull of the two lungs minus the lungs is excluded from Dice",
}


@dataclass(frozen=True)
class MaskSource:
    """A known real source: where it usually is, how it is laid out, which mask convention it follows."""

    layout: Literal["manifest", "suffix"]
    convention: Convention
    default_path: str | None = None
    subdir: str = ""
    description: str = ""


SOURCES: dict[str, MaskSource] = {
    "hannover": MaskSource(
        layout="manifest",
        convention="v7labs",
        default_path="../shared/data/real-cxr-lungs",
        description="84 radiographs of Hannover Medical School (COVID-19 image data collection), v7labs "
        "masks",
    ),
    "openist": MaskSource(
        layout="suffix",
        convention="jsrt",
        subdir="Datasets/Chest_x-ray",
        description="275 normal radiographs of the OpenIST teaching set (pi-null-mezon/OpenIST), manual "
        "masks",
    ),
    "cohen": MaskSource(
        layout="manifest",
        convention="v7labs",
        description="343 frontal radiographs of the COVID-19 image data collection outside Hannover (86 "
        "locations: hospitals, journals, web cases) with the V7 Labs masks, built by "
        "examples/public-cxr/build_mask_truth.py; half of its patients fine-tuned the shipped segmenter",
    ),
}


@dataclass(frozen=True)
class TruthPair:
    """One real radiograph and its human lung mask."""

    name: str
    image: Path
    mask: Path


def parse_source(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (or a known ``NAME`` alone, for its default path) -> ``(name, path)``."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not name:
        raise ValueError(f"--source {text!r}: expected NAME=PATH")
    if not sep:
        known = SOURCES.get(name)
        if known is None or known.default_path is None:
            raise ValueError(
                f"--source {text!r}: give a path (NAME=PATH); known defaults: "
                f"{[k for k, v in SOURCES.items() if v.default_path]}"
            )
        return name, Path(known.default_path)
    return name, Path(path.strip())


def _suffix_pairs(folder: Path) -> list[TruthPair]:
    from isnetflow.masks.io import RASTER_SUFFIXES

    pairs = []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in RASTER_SUFFIXES and not f.stem.endswith("@"):
            mask = f.with_name(f"{f.stem}@.png")
            if mask.is_file():
                pairs.append(TruthPair(f.stem, f, mask))
    return pairs


def _manifest_pairs(folder: Path) -> list[TruthPair]:
    manifest = folder / "manifest.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0] or "mask" not in rows[0]:
        raise ValueError(f"{manifest}: needs 'image' and 'mask' columns")
    pairs = []
    for r in rows:
        image, mask = folder / r["image"], folder / r["mask"]
        if not image.is_file() or not mask.is_file():
            raise ValueError(f"{manifest}: {r['image']} or {r['mask']} is missing")
        pairs.append(TruthPair(Path(r["image"]).stem, image, mask))
    return pairs


def find_truth_pairs(name: str, path: Path) -> tuple[list[TruthPair], Convention]:
    """The image/mask pairs of a source and its mask convention.

    A known source's layout is used; an unknown name is read as a ``manifest.csv`` folder (columns image,
    mask) or as ``<n>.<ext>`` + ``<n>@.png`` pairs, with the v7labs convention.
    """
    known = SOURCES.get(name)
    folder = path / known.subdir if known and known.subdir and (path / known.subdir).is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (source {name!r})")
    layout = known.layout if known else ("manifest" if (folder / "manifest.csv").is_file() else "suffix")
    pairs = _manifest_pairs(folder) if layout == "manifest" else _suffix_pairs(folder)
    if not pairs:
        raise ValueError(f"{folder}: no image/mask pairs found (source {name!r}, layout {layout})")
    return pairs, (known.convention if known else "v7labs")


def _hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a boolean mask (the mask itself when it has fewer than 3 pixels)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask)
    if len(pts) < 3:
        return mask.copy()
    try:
        hull = ConvexHull(pts[:, ::-1])
    except QhullError:  # collinear pixels
        return mask.copy()
    canvas = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(pts[i, 1]), float(pts[i, 0])) for i in hull.vertices], fill=1)
    return np.asarray(canvas, dtype=bool) | mask


def convention_ignore(lung: np.ndarray, ignore: np.ndarray, convention: str) -> np.ndarray:
    """Pixels excluded from Dice for a reference mask of ``convention`` (see :data:`CONVENTIONS`)."""
    if convention == "v7labs":
        return ignore
    if convention == "jsrt":
        return ignore | (_hull(lung) & ~lung)
    raise ValueError(f"unknown mask convention {convention!r}; known: {sorted(CONVENTIONS)}")


_REASON_KEYS = (
    ("lung components stacked", "sides"),
    ("lung area", "area"),
    ("lung size balance", "balance"),
    ("fragmented", "fragments"),
    ("low confidence", "confidence"),
    ("lung component", "components"),
    ("unstable", "mirror"),
)


def _reason_key(reason: str) -> str:
    """The QC check a failure reason of :func:`~isnetflow.masks.qc.assess` comes from."""
    return next((key for prefix, key in _REASON_KEYS if prefix in reason), "other")


def _decisions(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dice summary and the QC's decisions against the human masks for a group of rows."""
    good = [r for r in rows if r["dice"] >= BAD_DICE]
    bad = [r for r in rows if r["dice"] < BAD_DICE]
    good_q = [r for r in good if not r["qc_passed"]]
    bad_c = [r for r in bad if not r["qc_passed"]]
    reasons: Counter[str] = Counter()
    for r in rows:
        for reason in filter(None, r["qc_reason"].split("; ")):
            reasons[_reason_key(reason)] += 1
    return {
        "n": len(rows),
        "dice": summarize([r["dice"] for r in rows]),
        "dice_raw": summarize([r["dice_raw"] for r in rows]),
        "n_bad": len(bad),
        "good_quarantined": {"count": len(good_q), "of": len(good), "share": len(good_q) / max(1, len(good))},
        "bad_caught": {
            "count": len(bad_c),
            "of": len(bad),
            "share": (len(bad_c) / len(bad)) if bad else None,
        },
        "kept": {
            "count": sum(r["qc_passed"] for r in rows),
            "share": sum(r["qc_passed"] for r in rows) / max(1, len(rows)),
        },
        "qc_reasons": dict(reasons.most_common()),
        "good_quarantined_images": sorted(f"{r['image']} ({r['qc_reason']})" for r in good_q)[:20],
        "bad_passed_images": sorted(f"{r['image']} (Dice {r['dice']:.3f})" for r in bad if r["qc_passed"])[
            :20
        ],
    }


def _judge(block: dict[str, Any], dice_block: dict[str, Any]) -> dict[str, bool | None]:
    caught = block["bad_caught"]["share"]
    return {
        "good_quarantined": block["good_quarantined"]["share"] <= TARGETS["max_good_quarantined"],
        "bad_caught": None if caught is None else caught >= TARGETS["min_bad_caught"],
        "mean_dice": dice_block["dice"]["mean"] >= TARGETS["min_mean_dice"],
    }


def _validation_images(seg: Any) -> set[str]:
    """Names of the segmenter's held-out validation images, as its spec records them."""
    raw = seg.spec.training.get("validation_images")
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return set()
    return {str(x) for x in raw} if isinstance(raw, list | tuple) else set()


def _score_items(
    seg: Any,
    items: Iterable[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]],
    convention: str,
    cfg: MaskConfig,
) -> list[dict[str, Any]]:
    """Segment (name, variant, image, lung, ignore) items with the production path; one row each."""
    from isnetflow.masks.metrics import dice
    from isnetflow.masks.qc import assess_prediction

    rows = []
    for name, variant, image, lung, ignore in items:
        pred = seg.predict([image])[0]
        qc = assess_prediction(pred, cfg)
        rows.append(
            {
                "image": name,
                "variant": variant,
                "convention": convention,
                "dice": dice(pred.mask, lung, convention_ignore(lung, ignore, convention)),
                "dice_raw": dice(pred.mask, lung, ignore),
                "qc_passed": qc.passed,
                "qc_reason": qc.reason,
                **{k: v for k, v in qc.to_row().items() if k not in ("qc_passed", "qc_reason")},
            }
        )
    return rows


def bench_masks(
    sources: Sequence[tuple[str, Path]],
    *,
    model: str | None = None,
    perturb: bool = False,
    draw: int = 0,
    cfg: MaskConfig | None = None,
    out: Path | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Dice and QC decisions against the human masks for each ``(name, folder)`` source.

    ``out`` receives ``mask_bench.csv`` (one row per image and variant) and ``mask_bench_gallery.png``
    (the worst masks and the quarantined ones, reference in green). ``limit`` keeps the first n images of
    each source (tests). ``draw`` picks the perturbations' random draw (0: the model card's; another
    draw perturbs the same images with other parameters, e.g. to set a QC threshold on one draw and
    judge it on another). Returns a JSON-able dict: per source ``clean`` (all images), ``held_out`` (a
    training source's validation images), ``perturbed`` (with ``perturb``) and ``targets``.
    """
    from isnetflow.masks.inference import LungSegmenter
    from isnetflow.masks.io import read_image, read_reference_mask
    from isnetflow.masks.robustness import PERTURBATIONS
    from isnetflow.masks.robustness import perturb as apply_perturbation

    cfg = cfg or MaskConfig()
    t0 = time.perf_counter()
    seg = LungSegmenter.load(
        model, batch_size=cfg.batch_size, mirror_check=cfg.min_mirror_agreement is not None
    )
    held_names = _validation_images(seg)
    result: dict[str, Any] = {"sources": {}, "bad_dice": BAD_DICE, "targets": dict(TARGETS)}
    all_rows: list[dict[str, Any]] = []
    for name, path in sources:
        pairs, convention = find_truth_pairs(name, path)
        # A source the segmenter was trained on has some of its images among the model's held-out ones
        # (its spec lists them): only those are unseen. A source none of whose images is listed is unseen.
        trained_on = any(p.name in held_names for p in pairs)
        pairs = pairs[:limit] if limit else pairs
        clean: list[dict[str, Any]] = []
        perturbed: list[dict[str, Any]] = []
        for i, pair in enumerate(tqdm(pairs, desc=f"bench masks {name}", unit="img", disable=not progress)):
            image = read_image(pair.image).pixels
            ref = read_reference_mask(pair.mask)
            if ref.lung.shape != image.shape:
                raise ValueError(f"{pair.mask}: mask is {ref.lung.shape} but {pair.image} is {image.shape}")
            clean += _score_items(seg, [(pair.name, "clean", image, ref.lung, ref.ignore)], convention, cfg)
            if perturb and (not trained_on or pair.name in held_names):  # unseen images only
                lo, hi = float(image.min()), float(image.max())
                unit = (image - lo) / max(hi - lo, 1e-9)
                base = PERTURB_DRAW_STRIDE * draw + i
                moved = (
                    (pair.name, p, *apply_perturbation(p, unit, ref.lung, ref.ignore, seed=base + 1000 * k))
                    for k, p in enumerate(PERTURBATIONS)
                )
                perturbed += _score_items(seg, moved, convention, cfg)
        for r in clean + perturbed:
            r["source"] = name
            r["held_out"] = (r["image"] in held_names) if trained_on else True
        block: dict[str, Any] = {
            "path": str(path),
            "convention": convention,
            "trained_on": trained_on,
            "clean": _decisions(clean),
        }
        held = [r for r in clean if r["held_out"]]
        block["held_out"] = _decisions(held) if trained_on else None
        if perturb:
            block["perturbed"] = _decisions(perturbed)
            block["perturbed_per_kind"] = {
                p: {"dice_mean": summarize([r["dice"] for r in perturbed if r["variant"] == p])["mean"]}
                for p in PERTURBATIONS
            }
        unseen = block["held_out"] or block["clean"]  # a training source is judged on its held-out images
        judged = block["perturbed"] if perturb else unseen
        block["targets_met"] = _judge(
            {"good_quarantined": unseen["good_quarantined"], "bad_caught": judged["bad_caught"]}, unseen
        )
        result["sources"][name] = block
        all_rows += clean + perturbed
    result.update(
        {
            "model": {
                "source": model or "shipped",
                "architecture": seg.spec.architecture,
                "weights_sha256": seg.spec.weights_sha256,
            },
            "qc": {k: getattr(cfg, k) for k in _QC_KEYS},
            "perturb": perturb,
            "perturb_draw": draw,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
            },
        }
    )
    if out is not None:
        _write_outputs(Path(out), all_rows, sources, seg, cfg)
        result["outputs"] = {
            "table": str(Path(out) / "mask_bench.csv"),
            "gallery": str(Path(out) / "mask_bench_gallery.png"),
        }
    return result


_QC_KEYS = (
    "min_area_fraction",
    "max_area_fraction",
    "min_lung_balance",
    "max_fragment_fraction",
    "min_confidence",
)


def _write_outputs(
    out: Path, rows: list[dict[str, Any]], sources: Sequence[tuple[str, Path]], seg: Any, cfg: MaskConfig
) -> None:
    """The per-image table and a gallery of the worst clean masks and the quarantined ones."""
    from isnetflow.masks.gallery import GalleryTile, overlay, write_gallery
    from isnetflow.masks.io import read_image, read_reference_mask

    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "mask_bench.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    clean = [r for r in rows if r["variant"] == "clean"]
    chosen = sorted(clean, key=lambda r: (r["qc_passed"], r["dice"]))[:24]
    paths = {}
    for name, path in sources:
        for pair in find_truth_pairs(name, path)[0]:
            paths[(name, pair.name)] = pair
    tiles = []
    for r in chosen:
        pair = paths[(r["source"], r["image"])]
        image = read_image(pair.image).pixels
        ref = read_reference_mask(pair.mask)
        mask = seg.predict([image])[0].mask
        verdict = "ok" if r["qc_passed"] else "QC: " + r["qc_reason"][:22]
        caption = f"{r['source']} {r['image'][:16]}\nDice {r['dice']:.3f} {verdict}"
        shown = convention_ignore(ref.lung, ref.ignore, r["convention"])
        tiles.append(
            GalleryTile(overlay(image, mask, reference=ref.lung, ignore=shown), caption, r["qc_passed"])
        )
    write_gallery(
        tiles,
        out / "mask_bench_gallery.png",
        columns=6,
        title="Lung masks against human masks: quarantined first, then lowest Dice "
        "(red: segmenter, green: human)",
    )
