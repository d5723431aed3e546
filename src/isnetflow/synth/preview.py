"""A picture of a cohort: one row per site, one column per (class, cue) cell, lung outlines drawn.

The images are read back from the written DICOM files (not from memory), so the preview also shows
that the files decode to the intended picture: MONOCHROME1 sites must look like the others.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut

from isnetflow.config import SynthConfig
from isnetflow.viz.figures import save_figure

__all__ = ["display_array", "write_preview", "write_shortcut_gallery"]


def display_array(path: str | Path) -> np.ndarray:
    """Decode a DICOM file to a float image in [0, 1] for display (bright = dense)."""
    ds = pydicom.dcmread(path)
    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = arr.max() - arr
    lo, hi = np.percentile(arr, [0.5, 99.5])
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)


def write_preview(cohort_dir: str | Path, png: str | Path, *, thumb: float = 1.6) -> Path:
    """Grid of examples per site (rows) and class x shortcut-cue (columns) with lung-mask outlines."""
    root = Path(cohort_dir)
    info = json.loads((root / "cohort.json").read_text())
    with (root / "truth.csv").open() as f:
        truth = list(csv.DictReader(f))
    classes: list[str] = info["classes"]
    cols = [(c, cue) for c in classes for cue in (False, True)]
    sites = [s for s in info["sites"] if s["n_images"]]
    fig, axes = plt.subplots(
        len(sites), len(cols), figsize=(thumb * len(cols), thumb * 1.1 * len(sites)), squeeze=False
    )
    for i, site in enumerate(sites):
        for j, (cls, cue) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            match = [
                r
                for r in truth
                if r["site"] == site["name"] and r["label"] == cls and bool(int(r["cue_present"])) == cue
            ]
            if j == 0:
                role = "internal" if site["role"] == "internal" else "EXTERNAL"
                ax.set_ylabel(
                    f"{site['code']} ({role})\nMONO{site['photometric'][-1:]} {site['bits_stored']}-bit",
                    fontsize=7,
                )
            if i == 0:
                ax.set_title(f"{cls} · {'cue' if cue else 'no cue'}", fontsize=8)
            if not match:
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=7, color="0.5")
                continue
            r = match[0]
            img = display_array(root / r["path"])
            mask = np.asarray(Image.open(root / r["mask"])) > 127
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.contour(mask, levels=[0.5], colors=["#39ff14"], linewidths=0.6)
    fig.suptitle(
        f"isnetflow synthetic cohort (seed {info['seed']})\nplanted shortcut: "
        f"'{info['shortcut']['text']}' {info['shortcut']['kind']}, label-correlated at internal sites only",
        fontsize=8,
    )
    return save_figure(fig, png, dpi=110)


def write_shortcut_gallery(
    png: str | Path, *, size: int = 192, seed: int = 0, base: SynthConfig | None = None, thumb: float = 2.0
) -> Path:
    """Grid of one positive image with the planted cue per shortcut kind (columns) and placement (rows),
    rendered in memory at the first internal site, with the lung-mask outline drawn."""
    from dataclasses import replace

    from .cohort import plan_cohort, render_item
    from .cues import PLACEMENTS, SHORTCUTS

    cfg = (base or SynthConfig()).model_copy(update={"n": 12, "size": size, "seed": seed})
    site = next(i for i, s in enumerate(cfg.sites) if s.role == "internal")
    item = next(it for it in plan_cohort(cfg) if it.site_index == site and it.positive)
    item = replace(item, cue=True)
    kinds = list(SHORTCUTS)
    fig, axes = plt.subplots(
        len(PLACEMENTS),
        len(kinds),
        figsize=(thumb * len(kinds), thumb * 1.15 * len(PLACEMENTS)),
        squeeze=False,
    )
    for i, placement in enumerate(PLACEMENTS):
        for j, kind in enumerate(kinds):
            shortcut = cfg.shortcut.model_copy(update={"kind": kind, "placement": placement})
            r = render_item(item, cfg.model_copy(update={"shortcut": shortcut}))
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(r.presentation, cmap="gray", vmin=0, vmax=1)
            ax.contour(r.lung, levels=[0.5], colors=["#39ff14"], linewidths=0.5)
            if i == 0:
                ax.set_title(kind, fontsize=8)
            if j == 0:
                ax.set_ylabel(placement, fontsize=8)
    fig.suptitle(
        f"isnetflow synth: shortcut kinds (synth.shortcut.kind) x placement (synth.shortcut.placement)\n"
        f"one {cfg.classes[1]} image of {cfg.sites[site].name}, seed {seed}; green: lung mask",
        fontsize=8,
    )
    return save_figure(fig, png, dpi=110)
