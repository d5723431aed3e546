"""Plan and write a synthetic multi-hospital chest-radiograph cohort.

The cohort reproduces the failure the ISNet exists for: at internal (training) sites a background cue
(a "PORTABLE" tag by default) marks the positive class; at external sites it is absent, random or
marks the *negative* class. A classifier that reads the cue scores well internally and fails
externally; one that reads the lungs does not.

Layout written by :func:`generate_cohort`::

    DIR/dicom/<site>/<patient>/<SOPInstanceUID>.dcm   Part-10 CR/DX files, de-identified
    DIR/labels.csv                                   path,label,patient_id,site (paths relative to DIR)
    DIR/masks/<SOPInstanceUID>.png                   ground-truth lung masks, 0/255, DICOM resolution
    DIR/truth.csv                                    path,cue_present,... (never read by training)
    DIR/cohort.json                                  sites, roles, class balance, shortcut statistics

Everything is a pure function of the configuration and seed: the plan is drawn first with one RNG,
then each image is rendered from its own seed, so the output is identical with any number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid
from scipy import ndimage
from tqdm import tqdm

from isnetflow import __version__
from isnetflow.config import SiteProfile, SynthConfig, resolve_workers

from .anatomy import render_anatomy, sample_anatomy
from .cues import draw_cue, draw_shortcut
from .dicom_writer import DicomMeta, write_dicom
from .disease import paint

__all__ = [
    "PlannedImage",
    "cue_allowed",
    "generate_cohort",
    "phi_coefficient",
    "plan_cohort",
    "render_item",
    "site_code",
]

UID_ROOT = "1.2.826.0.1.3680043.10.1541."  # isnetflow synthetic data UID prefix (< 64 chars total)


@dataclass(frozen=True)
class PlannedImage:
    """Everything needed to render and write one image, decided before any pixel is drawn."""

    index: int
    site_index: int
    site: str
    patient_id: str
    patient_seed: int
    image_seed: int
    label: str
    positive: bool
    cue: bool
    view: str
    severity: float
    rows: int
    cols: int
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str

    @property
    def relpath(self) -> str:
        """Where the image's DICOM file goes: ``dicom/<site slug>/<patient id>/<SOP UID>.dcm``."""
        return f"dicom/{slug(self.site)}/{self.patient_id}/{self.sop_uid}.dcm"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def site_code(name: str) -> str:
    """Short uppercase code from the initials of the site name (e.g. 'St Aurelia General' -> 'SAG')."""
    words = re.findall(r"[A-Za-z0-9]+", name)
    return "".join(w[0] for w in words).upper()[:6] or "SITE"


def phi_coefficient(positive: Sequence[bool], cue: Sequence[bool]) -> float:
    """Matthews/phi correlation between two binary sequences; 0.0 when either is constant."""
    a = np.asarray(positive, dtype=float)
    b = np.asarray(cue, dtype=float)
    if a.size == 0 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _split_counts(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder apportionment of ``total`` by ``weights`` (sums exactly to total)."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    base = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - base), kind="stable")[: total - base.sum()]:
        base[i] += 1
    return [int(x) for x in base]


def _cue_flags(mode: str, positive: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Exact-proportion cue assignment per (site, class) group, so small cohorts hit the target rates."""
    cue = np.zeros(positive.size, dtype=bool)
    if mode == "absent":
        return cue
    rates = {
        "correlated": (cfg.shortcut.strength, 1 - cfg.shortcut.strength),
        "anti": (1 - cfg.shortcut.anti_strength, cfg.shortcut.anti_strength),
        "random": (0.5, 0.5),
    }[mode]
    for group, rate in ((True, rates[0]), (False, rates[1])):
        idx = np.flatnonzero(positive == group)
        k = round(rate * idx.size)
        cue[rng.permutation(idx)[:k]] = True
    return cue


def _uid(cfg: SynthConfig, *parts: object) -> str:
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(cfg.seed), *map(str, parts)]))


def plan_cohort(cfg: SynthConfig) -> list[PlannedImage]:
    """Decide every image's site, patient, label, cue, view and seeds (no pixels)."""
    rng = np.random.default_rng(cfg.seed)
    counts = _split_counts(cfg.n, [s.weight for s in cfg.sites])
    negative, positives = cfg.classes[0], cfg.classes[1:]
    plan: list[PlannedImage] = []
    index = 0
    for si, (site, n_site) in enumerate(zip(cfg.sites, counts, strict=True)):
        if n_site == 0:
            continue
        n_pos = round(site.prevalence * n_site)
        positive = np.zeros(n_site, dtype=bool)
        positive[:n_pos] = True
        rng.shuffle(positive)
        labels = [positives[int(rng.integers(len(positives)))] if p else negative for p in positive.tolist()]
        cue = _cue_flags(site.shortcut_mode, positive, cfg, rng)
        rows = round(cfg.size * site.size_scale / 2) * 2
        cols = round(rows / site.aspect / 2) * 2
        # Patients: same-label images are paired into follow-up studies at the configured rate.
        patient_of = np.empty(n_site, dtype=np.int64)
        pid = 0
        for lab in sorted(set(labels)):
            idx = rng.permutation([i for i, v in enumerate(labels) if v == lab])
            j = 0
            while j < idx.size:
                take = 2 if (j + 1 < idx.size and rng.random() < cfg.repeat_patient_fraction) else 1
                patient_of[idx[j : j + take]] = pid
                pid += 1
                j += take
        patient_seeds = rng.integers(0, 2**31 - 1, size=pid)
        code = site_code(site.name)
        for i in range(n_site):
            p_id = f"{code}-{int(patient_of[i]):05d}"
            sev = float(rng.beta(2.0, 2.0)) if positive[i] else 0.0
            view = "AP" if rng.random() < site.ap_fraction else "PA"
            date = f"20{rng.integers(18, 26)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
            plan.append(
                PlannedImage(
                    index=index,
                    site_index=si,
                    site=site.name,
                    patient_id=p_id,
                    patient_seed=int(patient_seeds[patient_of[i]]),
                    image_seed=int(rng.integers(0, 2**31 - 1)),
                    label=labels[i],
                    positive=bool(positive[i]),
                    cue=bool(cue[i]),
                    view=view,
                    severity=sev,
                    rows=rows,
                    cols=cols,
                    study_uid=_uid(cfg, "study", index),
                    series_uid=_uid(cfg, "series", index),
                    sop_uid=_uid(cfg, "sop", index),
                    study_date=date,
                )
            )
            index += 1
    return plan


def cue_allowed(lung: np.ndarray) -> np.ndarray:
    """Where background cues may draw: outside the lung mask dilated by ~2 % of the image height."""
    return ~ndimage.binary_dilation(lung, iterations=max(2, lung.shape[0] // 50))


@dataclass
class RenderedItem:
    pixels: np.ndarray  # stored values (uint8/uint16), photometric applied
    lung: np.ndarray  # bool ground-truth mask
    cue_footprint: np.ndarray  # bool pixels of the planted shortcut (empty when absent)
    presentation: np.ndarray  # float32 [0, 1] display image (bright = dense)
    meta: DicomMeta


def render_item(item: PlannedImage, cfg: SynthConfig) -> RenderedItem:
    """Render one planned image: anatomy, disease, site tone curve, noise, cues, quantization."""
    site: SiteProfile = cfg.sites[item.site_index]
    anatomy = sample_anatomy(np.random.default_rng(item.patient_seed), ap_view=item.view == "AP")
    rng = np.random.default_rng(item.image_seed)
    # Follow-up studies of one patient share the anatomy but not the exact pose.
    anatomy = dataclasses.replace(anatomy, rotation_deg=anatomy.rotation_deg + float(rng.normal(0, 1.0)))
    r = render_anatomy(anatomy, item.rows, item.cols)
    lung = r.lung
    att = r.attenuation + paint(item.label, r, rng, cfg.difficulty, item.severity)

    # Site tone curve (exposure, contrast, gamma) and detector noise with its own grain.
    p = np.clip(0.5 + site.contrast * (att - 0.5) + site.brightness, 0.0, 1.0) ** site.gamma
    noise = rng.standard_normal(p.shape).astype(np.float32)
    if site.noise_grain > 0.3:
        noise = ndimage.gaussian_filter(noise, site.noise_grain)
        noise /= max(float(noise.std()), 1e-6)
    p = np.clip(p + site.noise_sigma * noise * (0.6 + 0.4 * (1.0 - p)), 0.0, 1.0).astype(np.float32)

    # Background cues may only touch pixels well outside the lungs.
    allowed = cue_allowed(lung)
    for name in site.cues:
        draw_cue(name, p, allowed, rng, site.text or site_code(site.name))
    footprint = np.zeros(p.shape, dtype=bool)
    if item.cue:
        footprint = draw_shortcut(
            cfg.shortcut.kind, p, allowed, rng, cfg.shortcut.text, cfg.shortcut.placement
        )
    p = np.clip(p, 0.0, 1.0)

    # Quantize into the detector's used range; MONOCHROME1 stores inverted values.
    maxval = 2**site.bits_stored - 1
    lo, hi = site.value_range
    stored = np.rint((lo + (hi - lo) * p) * maxval)
    if site.photometric == "MONOCHROME1":
        stored = maxval - stored
    pixels = stored.astype(np.uint8 if site.bits_stored == 8 else np.uint16)
    center = site.rescale_slope * (lo + hi) / 2 * maxval + site.rescale_intercept
    width = site.rescale_slope * (hi - lo) * maxval
    meta = DicomMeta(
        sop_instance_uid=item.sop_uid,
        study_instance_uid=item.study_uid,
        series_instance_uid=item.series_uid,
        patient_id=item.patient_id,
        institution=site.name,
        modality=site.modality,
        view_position=item.view,
        photometric=site.photometric,
        bits_stored=site.bits_stored,
        pixel_spacing_mm=site.pixel_spacing_mm * 2048 / item.rows,
        study_date=item.study_date,
        window_center=center,
        window_width=width,
        rescale_slope=site.rescale_slope,
        rescale_intercept=site.rescale_intercept,
        burned_in=bool(site.cues) or item.cue,
        patient_sex="MF"[item.patient_seed % 2],
        patient_age=f"{20 + item.patient_seed % 70:03d}Y",
    )
    return RenderedItem(pixels=pixels, lung=lung, cue_footprint=footprint, presentation=p, meta=meta)


def _write_one(args: tuple[PlannedImage, SynthConfig, str]) -> dict[str, Any]:
    item, cfg, out = args
    out_dir = Path(out)
    rendered = render_item(item, cfg)
    write_dicom(out_dir / item.relpath, rendered.pixels, rendered.meta)
    Image.fromarray(rendered.lung.astype(np.uint8) * 255).save(out_dir / "masks" / f"{item.sop_uid}.png")
    return {
        "lung_fraction": float(rendered.lung.mean()),
        "cue_pixels": int(rendered.cue_footprint.sum()),
        "cue_in_lung_pixels": int((rendered.cue_footprint & rendered.lung).sum()),
    }


def _map(
    items: list[PlannedImage], cfg: SynthConfig, out: Path, workers: int, progress: bool
) -> Iterator[dict[str, Any]]:
    args = [(it, cfg, str(out)) for it in items]
    bar = dict(total=len(items), desc="synth", unit="img", disable=not progress, mininterval=0.5)
    if workers <= 1:
        yield from tqdm(map(_write_one, args), **bar)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from tqdm(pool.map(_write_one, args, chunksize=16), **bar)


def generate_cohort(cfg: SynthConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Write the cohort described by ``cfg`` under ``out``; returns the content of ``cohort.json``."""
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    plan = plan_cohort(cfg)
    workers = resolve_workers(cfg.workers)
    workers = min(workers, max(1, len(plan) // 32))  # tiny cohorts are faster in-process
    stats = list(_map(plan, cfg, out, workers, progress))

    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id", "site"])
        for it in plan:
            w.writerow([it.relpath, it.label, it.patient_id, it.site])
    with (out / "truth.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "path",
                "cue_present",
                "sop_instance_uid",
                "site",
                "role",
                "label",
                "view_position",
                "severity",
                "lung_fraction",
                "cue_pixels",
                "mask",
            ]
        )
        for it, st in zip(plan, stats, strict=True):
            w.writerow(
                [
                    it.relpath,
                    int(it.cue),
                    it.sop_uid,
                    it.site,
                    cfg.sites[it.site_index].role,
                    it.label,
                    it.view,
                    f"{it.severity:.4f}",
                    f"{st['lung_fraction']:.4f}",
                    st["cue_pixels"],
                    f"masks/{it.sop_uid}.png",
                ]
            )

    sites = []
    for si, site in enumerate(cfg.sites):
        items = [it for it in plan if it.site_index == si]
        pos = [it.positive for it in items]
        cue = [it.cue for it in items]
        sites.append(
            {
                "name": site.name,
                "code": site_code(site.name),
                "role": site.role,
                "shortcut_mode": site.shortcut_mode,
                "modality": site.modality,
                "photometric": site.photometric,
                "bits_stored": site.bits_stored,
                "rows": items[0].rows if items else None,
                "columns": items[0].cols if items else None,
                "cues": list(site.cues),
                "n_images": len(items),
                "n_patients": len({it.patient_id for it in items}),
                "class_counts": {c: sum(it.label == c for it in items) for c in cfg.classes},
                "positive_fraction": float(np.mean(pos)) if items else None,
                "cue_rate": float(np.mean(cue)) if items else None,
                "cue_label_phi": phi_coefficient(pos, cue),
                "cue_label_agreement": float(np.mean(np.equal(pos, cue))) if items else None,
            }
        )
    summary: dict[str, Any] = {
        "generator": f"isnetflow {__version__}",
        "seed": cfg.seed,
        "n": len(plan),
        "size": cfg.size,
        "classes": cfg.classes,
        "negative_class": cfg.classes[0],
        "difficulty": cfg.difficulty,
        "shortcut": {
            **cfg.shortcut.model_dump(),
            "description": "background cue correlated with the label at internal sites, "
            "absent / random / anti-correlated at external sites; ground truth per image in truth.csv",
            "cue_pixels_inside_lungs": int(sum(s["cue_in_lung_pixels"] for s in stats)),
        },
        "internal_sites": [s.name for s in cfg.sites if s.role == "internal"],
        "external_sites": [s.name for s in cfg.sites if s.role == "external"],
        "sites": sites,
        "files": {
            "labels": "labels.csv",
            "truth": "truth.csv",
            "masks": "masks/<SOPInstanceUID>.png",
            "dicom": "dicom/<site>/<patient>/<SOPInstanceUID>.dcm",
        },
        "config": cfg.model_dump(mode="json", exclude={"workers"}),
    }
    (out / "cohort.json").write_text(json.dumps(summary, indent=2))
    return summary
