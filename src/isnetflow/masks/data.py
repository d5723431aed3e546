"""Training data for the lung segmenter: real image/mask pairs and synthetic phantoms.

Real pairs are matched by file stem (``images/<stem>.*`` with ``masks/<stem>.png``); patient ids come
from a manifest CSV so the validation split can be grouped by patient. Reference masks use 255 = lung,
0 = background, 127 = ignore (excluded from loss and metrics).

Synthetic phantoms come from :mod:`isnetflow.synth`. Their masks follow a JSRT-like convention (the
heart is cut out of the left lung) while the real v7labs masks include the lung behind the heart. With
``heart="ignore"`` the region that differs (the lung envelope under the heart) is excluded from the loss,
so phantoms add acquisition variety (sites, bit depths, noise, burned-in text, rulers, electrodes,
aspect ratios) without teaching the other convention.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import GroupShuffleSplit
from tqdm import tqdm

from .io import RASTER_SUFFIXES, is_dicom, read_image, read_reference_mask
from .transforms import to_model_space

log = logging.getLogger(__name__)

__all__ = [
    "PairRecord",
    "Sample",
    "find_pairs",
    "grouped_split",
    "heart_envelope_ignore",
    "load_original",
    "prepare_pair",
    "synthetic_samples",
]


@dataclass(frozen=True)
class PairRecord:
    """One real image with its reference mask and patient id."""

    name: str
    image: Path
    mask: Path
    patient_id: str
    split: Literal["train", "val"] | None = None  # fixed by the manifest's ``split`` column; None: random


@dataclass
class Sample:
    """One training/validation example in network space (letterboxed ``size`` x ``size``)."""

    name: str
    patient_id: str
    source: Literal["real", "synthetic"]
    image: np.ndarray  # float32 in [0, 1]
    label: np.ndarray  # uint8 0/1 lung
    ignore: np.ndarray  # uint8 0/1 excluded from loss and metrics


def _read_manifest(manifest: Path) -> dict[str, tuple[str, Literal["train", "val"] | None]]:
    """Map image stem -> (patient id, fixed split) from a CSV with ``patient_id`` and an image column.

    An optional ``split`` column (``train`` / ``val``; empty: none) fixes which side each image is on, e.g.
    to keep a previous model's held-out patients held out when fine-tuning it on more data.
    """
    try:
        with manifest.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ValueError(f"{manifest}: cannot read manifest: {exc}") from exc
    if not rows:
        raise ValueError(f"{manifest}: manifest is empty")
    col = next((c for c in ("image", "path", "file", "name", "stem") if c in rows[0]), None)
    if col is None or "patient_id" not in rows[0]:
        raise ValueError(
            f"{manifest}: needs a 'patient_id' column and one of image/path/file/name/stem; "
            f"has {list(rows[0])}"
        )
    out: dict[str, tuple[str, Literal["train", "val"] | None]] = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(col):
            continue
        split = (r.get("split") or "").strip().lower() or None
        if split not in (None, "train", "val"):
            raise ValueError(f"{manifest}: line {i}: split {r['split']!r} is not 'train' or 'val'")
        out[Path(r[col]).stem] = (str(r["patient_id"]).strip(), split)  # type: ignore[assignment]
    return out


def find_pairs(images: str | Path, masks: str | Path, manifest: str | Path | None = None) -> list[PairRecord]:
    """Pair every image in ``images`` with ``masks/<stem>.png`` and a patient id.

    Without a manifest each image is its own patient (a warning says the split may then leak). Images
    without a mask are skipped with a warning; images missing from a given manifest are an error.
    """
    img_dir, mask_dir = Path(images), Path(masks)
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a folder")
    files = sorted(
        f for f in img_dir.iterdir() if f.is_file() and (f.suffix.lower() in RASTER_SUFFIXES or is_dicom(f))
    )
    if not files:
        raise ValueError(f"{img_dir}: no PNG/JPEG/DICOM images found")
    patients = _read_manifest(Path(manifest)) if manifest is not None else None
    if patients is None:
        log.warning("no manifest: every image is its own patient; the validation split may leak patients")
    pairs: list[PairRecord] = []
    missing_mask: list[str] = []
    missing_patient: list[str] = []
    for f in files:
        mask = next(
            (mask_dir / f"{f.stem}{s}" for s in (".png", ".PNG") if (mask_dir / f"{f.stem}{s}").is_file()),
            None,
        )
        if mask is None:
            missing_mask.append(f.name)
            continue
        if patients is not None and f.stem not in patients:
            missing_patient.append(f.name)
            continue
        pid, split = patients[f.stem] if patients is not None else (f.stem, None)
        pairs.append(PairRecord(f.stem, f, mask, pid, split))
    if missing_mask:
        log.warning(
            "%d image(s) without a mask in %s skipped, e.g. %s", len(missing_mask), mask_dir, missing_mask[:3]
        )
    if missing_patient:
        raise ValueError(
            f"{manifest}: no patient_id for {len(missing_patient)} image(s), e.g. {missing_patient[:3]}"
        )
    if not pairs:
        raise ValueError(f"no image/mask pairs: images in {img_dir}, masks <stem>.png in {mask_dir}")
    return pairs


def grouped_split(
    records: Sequence[PairRecord], val_fraction: float, seed: int
) -> tuple[list[PairRecord], list[PairRecord]]:
    """Split by patient: no patient has images on both sides. ``val_fraction`` is a share of patients.

    When the manifest fixed a split (:attr:`PairRecord.split`) it is used as given, for every record, and
    ``val_fraction`` and ``seed`` are not: all records must name one, and no patient may be on both sides.
    """
    fixed = [r for r in records if r.split is not None]
    if fixed:
        if len(fixed) != len(records):
            missing = [r.name for r in records if r.split is None]
            raise ValueError(
                f"the manifest fixes the split of {len(fixed)} image(s) but not of {len(missing)}, "
                f"e.g. {missing[:3]}: give every image a split, or none"
            )
        sides: dict[str, set[str]] = {}
        for r in records:
            sides.setdefault(r.patient_id, set()).add(str(r.split))
        both = sorted(p for p, s in sides.items() if len(s) > 1)
        if both:
            raise ValueError(
                f"patient(s) {both[:3]} have images in both train and val of the manifest's split"
            )
        return [r for r in records if r.split == "train"], [r for r in records if r.split == "val"]
    if val_fraction <= 0:
        return list(records), []
    groups = [r.patient_id for r in records]
    if len(set(groups)) < 2:
        raise ValueError("a validation split needs at least two patients")
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(records)), groups=groups))
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(val_idx)]


def load_original(record: PairRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, lung, ignore)`` at the original resolution; image and mask must have the same shape."""
    image = read_image(record.image).pixels
    ref = read_reference_mask(record.mask)
    if ref.lung.shape != image.shape:
        raise ValueError(
            f"{record.mask}: mask is {ref.lung.shape[0]}x{ref.lung.shape[1]} but {record.image} is "
            f"{image.shape[0]}x{image.shape[1]}"
        )
    return image, ref.lung, ref.ignore


def _mask_to_model(mask: np.ndarray, size: int) -> np.ndarray:
    small, _ = to_model_space(mask.astype(np.float32), size, percentiles=(0.0, 100.0))
    # to_model_space rescales by the mask's own min/max: an all-zero or all-one mask stays as is.
    if not mask.any():
        return np.zeros((size, size), dtype=np.uint8)
    return (small > 0.5).astype(np.uint8)


def prepare_pair(record: PairRecord, size: int, percentiles: tuple[float, float] = (0.5, 99.5)) -> Sample:
    """Read one pair and bring it to network space (normalized, letterboxed, resized)."""
    image, lung, ignore = load_original(record)
    x, _ = to_model_space(image, size, percentiles=percentiles)
    return Sample(
        record.name, record.patient_id, "real", x, _mask_to_model(lung, size), _mask_to_model(ignore, size)
    )


def heart_envelope_ignore(item: object, lung: np.ndarray) -> np.ndarray | None:
    """Lung envelope under the heart that the phantom mask cuts out (None if it cannot be rebuilt)."""
    from isnetflow.synth.anatomy import render_anatomy, sample_anatomy

    # Re-draw the anatomy exactly as render_item does (same seeds, same pose jitter) ...
    anatomy = sample_anatomy(np.random.default_rng(item.patient_seed), ap_view=item.view == "AP")  # type: ignore[attr-defined]
    rng = np.random.default_rng(item.image_seed)  # type: ignore[attr-defined]
    anatomy = dataclasses.replace(anatomy, rotation_deg=anatomy.rotation_deg + float(rng.normal(0, 1.0)))
    rows, cols = lung.shape
    if not np.array_equal(render_anatomy(anatomy, rows, cols).lung, lung):
        return None
    # ... then without the heart: the difference is the retro-cardiac lung.
    no_heart = dataclasses.replace(anatomy, heart_rx=1e-6, heart_ry=1e-6)
    envelope = render_anatomy(no_heart, rows, cols).lung
    return envelope & ~lung


def synthetic_samples(
    n: int,
    size: int,
    *,
    seed: int = 0,
    heart: Literal["ignore", "background"] = "ignore",
    percentiles: tuple[float, float] = (0.5, 99.5),
    progress: bool = True,
) -> list[Sample]:
    """Render ``n`` phantoms of the default six sites in memory and bring them to network space.

    Seeds differ from the default cohort seed (0) by a fixed offset so training phantoms are not the
    images of a default ``isnetflow synth`` cohort.
    """
    from isnetflow.config import SynthConfig
    from isnetflow.synth import plan_cohort, render_item

    if n <= 0:
        return []
    cfg = SynthConfig(n=n, size=max(64, size), seed=seed + 9001, workers=1)
    out: list[Sample] = []
    rebuilt = 0
    for item in tqdm(plan_cohort(cfg), desc="phantoms", unit="img", disable=not progress, mininterval=1.0):
        r = render_item(item, cfg)
        ignore = np.zeros(r.lung.shape, dtype=bool)
        if heart == "ignore":
            extra = heart_envelope_ignore(item, r.lung)
            if extra is not None:
                ignore = extra
                rebuilt += 1
        x, _ = to_model_space(r.presentation, size, percentiles=percentiles)
        out.append(
            Sample(
                f"synth-{item.index:05d}",
                item.patient_id,
                "synthetic",
                x,
                _mask_to_model(r.lung, size),
                _mask_to_model(ignore, size),
            )
        )
    if heart == "ignore" and rebuilt < n:
        log.warning(
            "heart region rebuilt for %d of %d phantoms; the rest keep the phantom convention", rebuilt, n
        )
    return out
