"""Build a lung-mask truth folder for ``isnetflow bench masks`` from the COVID-19 image data collection.

    python examples/public-cxr/build_mask_truth.py \
        --cohen PATH/covid-chestxray-dataset \
        --v7labs PATH/torchxrayvision/torchxrayvision/data/semantic_masks_v7labs_lungs.zip \
        --out data/cohen-v7labs
    isnetflow bench masks --source hannover --source cohen=data/cohen-v7labs --json

* **Images**: the frontal X-rays (PA, AP, AP Supine) of the collection's ``metadata.csv`` (a clone of
  ieee8023/covid-chestxray-dataset or its fork hida6/covid-chestxray-dataset), every finding.
* **Masks**: the V7 Labs lung annotations of the same images (CC BY 4.0), as mlmed/torchxrayvision ships
  them (``torchxrayvision/data/semantic_masks_v7labs_lungs.zip``, or the unzipped folder): one mask per
  file name, 0/255. The v7labs convention is the shipped segmenter's (lung behind the heart is lung).
* **Left out**: Hannover Medical School (the ``hannover`` source of ``bench masks``: the segmenter was
  trained on it), lateral views and CT slices, images the clone does not hold, masks whose size differs
  from their image's. Every mask of the archive is accounted for in ``build_report.json``.

The images come from dozens of hospitals, journals and web cases (web figures, ICU AP supine films,
arrows and captions): the collection is what "another hospital" looks like, and so the truth that the
mask QC is judged against beside the one-hospital Hannover set and the one-source OpenIST set.

Writes ``out/manifest.csv`` (image, mask, patient_id, view, site, split), ``out/images`` (hard links,
copies across file systems) and ``out/masks`` (8-bit PNG, 255 lung). ``split`` holds out half of the
patients (``val``), chosen by a hash of the patient id, so it does not move when the clone grows: the
shipped segmenter is fine-tuned on the ``train`` part and judged on the ``val`` part.

``--segmenter-data DIR --hannover PATH`` also writes the folder that fine-tunes the segmenter: the
Hannover pairs (``split`` = the shipped segmenter's own held-out images, so they stay held out) and these
pairs, in one ``images``/``masks``/``manifest.csv`` for ``isnetflow train-segmenter --manifest``.

Do not redistribute the built folders: the images keep their own licences (``license`` column of
``metadata.csv``).
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import os
import shutil
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

FRONTAL = {"PA", "AP", "AP Supine"}
MASK_SUFFIXES = {".png", ".jpg", ".jpeg"}
HELD_OUT_SHARE = 0.5


def held_out(patient_id: str) -> bool:
    """True for the half of the patients held out; a hash of the id, stable whatever else the clone holds."""
    digest = hashlib.sha256(f"cohen-v7labs:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_SHARE


def _masks(v7labs: Path, scratch: Path) -> dict[str, Path]:
    """File name -> mask path, from the torchxrayvision archive (extracted to ``scratch``) or a folder."""
    if v7labs.is_file() and zipfile.is_zipfile(v7labs):
        with zipfile.ZipFile(v7labs) as z:
            z.extractall(scratch)
        v7labs = scratch
    if not v7labs.is_dir():
        raise SystemExit(f"error: {v7labs}: neither the v7labs zip nor a folder of masks")
    files = sorted(v7labs.rglob("*"))
    found = {f.name: f for f in files if f.is_file() and f.suffix.lower() in MASK_SUFFIXES}
    if not found:
        raise SystemExit(f"error: {v7labs}: no mask images")
    return found


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build(cohen: Path, v7labs: Path, out: Path) -> dict[str, object]:
    """Write the truth folder; returns the build report (also ``out/build_report.json``)."""
    meta = cohen / "metadata.csv"
    if not meta.is_file():
        raise SystemExit(f"error: {meta}: not found (is --cohen a clone of covid-chestxray-dataset?)")
    with meta.open(newline="", encoding="utf-8") as fh:
        rows = {r.get("filename") or "": r for r in csv.DictReader(fh)}
    out.mkdir(parents=True, exist_ok=True)
    masks = _masks(v7labs, out / ".v7labs")
    left_out: Counter[str] = Counter()
    kept: list[dict[str, str]] = []
    for name, mask_path in masks.items():
        r = rows.get(name)
        if r is None:
            left_out["no metadata row"] += 1
            continue
        view = (r.get("view") or "").strip()
        if view not in FRONTAL:
            left_out[f"view {view or '?'} is not frontal"] += 1
            continue
        if "Hannover" in (r.get("location") or ""):
            left_out["Hannover Medical School (the 'hannover' source)"] += 1
            continue
        image = cohen / (r.get("folder") or "images") / name
        if not image.is_file():
            left_out["image file missing from the clone"] += 1
            continue
        with Image.open(image) as im:
            size = im.size
        with Image.open(mask_path) as m:
            arr = np.asarray(m.convert("L"))
        if (arr.shape[1], arr.shape[0]) != size:
            left_out["mask size differs from the image's"] += 1
            continue
        lung = arr > 127
        if not lung.any():
            left_out["empty mask"] += 1
            continue
        stem = Path(name).stem
        _place(image, out / "images" / name)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(lung, 255, 0).astype(np.uint8)).save(out / "masks" / f"{stem}.png")
        patient = (r.get("patientid") or "").strip()
        kept.append(
            {
                "image": f"images/{name}",
                "mask": f"masks/{stem}.png",
                "patient_id": patient,
                "view": view,
                "site": (r.get("location") or "").strip() or "unknown",
                "split": "val" if held_out(patient) else "train",
            }
        )
    shutil.rmtree(out / ".v7labs", ignore_errors=True)
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "patient_id", "view", "site", "split"])
        w.writeheader()
        w.writerows(kept)
    report = {
        "masks_in_archive": len(masks),
        "pairs": len(kept),
        "patients": len({r["patient_id"] for r in kept}),
        "sites": len({r["site"] for r in kept}),
        "views": dict(Counter(r["view"] for r in kept).most_common()),
        "split": dict(Counter(r["split"] for r in kept).most_common()),
        "left_out": dict(left_out.most_common()),
    }
    (out / "build_report.json").write_text(json.dumps(report, indent=2))
    return report


def segmenter_data(truth: Path, hannover: Path, out: Path) -> dict[str, object]:
    """The fine-tuning folder: Hannover (held-out images as the shipped segmenter had them) + ``truth``."""
    from isnetflow.masks.network import load_network

    raw = load_network(None)[1].training.get("validation_images") or []
    held = set(ast.literal_eval(raw) if isinstance(raw, str) else raw)
    if not held:
        raise SystemExit("error: the shipped segmenter's spec names no held-out images")
    rows: list[dict[str, str]] = []
    with (hannover / "manifest.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            stem = Path(r["image"]).stem
            rows.append(
                {
                    "source": str(hannover / r["image"]),
                    "mask": str(hannover / r["mask"]),
                    "stem": stem,
                    "name": Path(r["image"]).name,
                    "patient_id": f"hannover-{r['patient_id']}",
                    "split": "val" if stem in held else "train",
                }
            )
    with (truth / "manifest.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append(
                {
                    "source": str(truth / r["image"]),
                    "mask": str(truth / r["mask"]),
                    "stem": Path(r["image"]).stem,
                    "name": Path(r["image"]).name,
                    "patient_id": f"cohen-{r['patient_id']}",
                    "split": r["split"],
                }
            )
    if len({r["stem"] for r in rows}) != len(rows):
        raise SystemExit("error: image names repeat across the two sources")
    for r in rows:
        _place(Path(r["source"]), out / "images" / r["name"])
        _place(Path(r["mask"]), out / "masks" / f"{r['stem']}.png")
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "patient_id", "split"])
        w.writerows([f"images/{r['name']}", r["patient_id"], r["split"]] for r in rows)
    return {"pairs": len(rows), "split": dict(Counter(r["split"] for r in rows).most_common())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohen", type=Path, required=True, help="clone of covid-chestxray-dataset")
    p.add_argument(
        "--v7labs",
        type=Path,
        required=True,
        help="semantic_masks_v7labs_lungs.zip of torchxrayvision, or its unzipped folder",
    )
    p.add_argument("--out", type=Path, required=True, help="folder to build (a bench masks source)")
    p.add_argument("--segmenter-data", type=Path, help="also write the segmenter's fine-tuning folder here")
    p.add_argument("--hannover", type=Path, help="../shared/data/real-cxr-lungs (with --segmenter-data)")
    args = p.parse_args(argv)
    if (args.segmenter_data is None) != (args.hannover is None):
        p.error("--segmenter-data and --hannover go together")
    report = build(args.cohen, args.v7labs, args.out)
    if args.segmenter_data is not None:
        report["segmenter_data"] = segmenter_data(args.out, args.hannover, args.segmenter_data)
    print(json.dumps(report, indent=2))
    print(f"next: isnetflow bench masks --source cohen={args.out} --json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
