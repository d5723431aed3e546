"""``examples/public-cxr/build_mask_truth.py``: the v7labs masks of the COVID-19 image data collection as a
``bench masks`` source (frontal, Hannover apart, every mask accounted for, a stable patient split) and
the segmenter's fine-tuning folder (Hannover's held-out images stay held out)."""

from __future__ import annotations

import csv
import importlib.util
import json
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from isnetflow.bench.masks import find_truth_pairs
from isnetflow.masks.data import find_pairs, grouped_split
from isnetflow.masks.network import load_network

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "public-cxr" / "build_mask_truth.py"

META = [  # patientid, view, location, filename, has image, mask size differs
    ("1", "PA", "Wuhan, China", "a.jpg", True, False),
    ("2", "AP Supine", "Milan", "b.png", True, False),
    ("3", "L", "Milan", "c.jpg", True, False),
    ("4", "PA", "Hannover Medical School, Hannover, Germany", "h.jpg", True, False),
    ("5", "AP", "Seoul", "gone.jpg", False, False),
    ("6", "PA", "Tokyo", "d.jpg", True, True),
]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_mask_truth", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collection(tmp: Path) -> tuple[Path, Path]:
    cohen = tmp / "covid-chestxray-dataset"
    (cohen / "images").mkdir(parents=True)
    archive = tmp / "semantic_masks_v7labs_lungs.zip"
    with (cohen / "metadata.csv").open("w", newline="") as fh, zipfile.ZipFile(archive, "w") as z:
        w = csv.writer(fh)
        w.writerow(["patientid", "view", "location", "folder", "filename"])
        for pid, view, loc, name, has_image, other_size in META:
            w.writerow([pid, view, loc, "images", name])
            if has_image:
                Image.fromarray(np.full((40, 48, 3), 90, dtype=np.uint8)).save(cohen / "images" / name)
            mask = np.zeros((30, 48) if other_size else (40, 48), dtype=np.uint8)
            mask[5:35, 4:20] = 250  # a JPEG-ish value: lung is > 127
            mask[5:35, 28:44] = 255
            Image.fromarray(mask).save(tmp / f"m_{name}.png")
            z.write(tmp / f"m_{name}.png", f"semantic_masks_v7labs_lungs/{name}")
        z.writestr("semantic_masks_v7labs_lungs/unknown.png", (tmp / "m_a.jpg.png").read_bytes())
    return cohen, archive


def test_truth_folder_is_a_bench_source_with_every_mask_accounted_for(tmp_path: Path) -> None:
    cohen, archive = _collection(tmp_path)
    out = tmp_path / "truth"
    report = _load().build(cohen, archive, out)
    assert report["pairs"] == 2 and report["masks_in_archive"] == 7
    assert report["left_out"] == {
        "no metadata row": 1,
        "view L is not frontal": 1,
        "Hannover Medical School (the 'hannover' source)": 1,
        "image file missing from the clone": 1,
        "mask size differs from the image's": 1,
    }
    assert sum(report["left_out"].values()) + report["pairs"] == report["masks_in_archive"]
    assert json.loads((out / "build_report.json").read_text()) == report
    assert not (out / ".v7labs").exists()
    pairs, convention = find_truth_pairs("cohen-test", out)
    assert sorted(p.name for p in pairs) == ["a", "b"] and convention == "v7labs"
    mask = np.asarray(Image.open(out / "masks" / "a.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 2 * 30 * 16
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert {r["split"] for r in rows} <= {"train", "val"}
    module = _load()
    assert [module.held_out(r["patient_id"]) for r in rows] == [r["split"] == "val" for r in rows]
    shares = [module.held_out(str(i)) for i in range(2000)]
    assert abs(np.mean(shares) - module.HELD_OUT_SHARE) < 0.04  # about the documented share


def test_segmenter_folder_keeps_hannover_held_out_images_held_out(tmp_path: Path) -> None:
    cohen, archive = _collection(tmp_path)
    held = load_network(None)[1].training["validation_images"][0]
    hannover = tmp_path / "hannover"
    for sub in ("images", "masks"):
        (hannover / sub).mkdir(parents=True)
    with (hannover / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "patient_id"])
        for stem, pid in ((held, "9"), ("trainme", "10")):
            Image.fromarray(np.full((40, 48), 80, dtype=np.uint8)).save(hannover / "images" / f"{stem}.png")
            Image.fromarray(np.full((40, 48), 255, dtype=np.uint8)).save(hannover / "masks" / f"{stem}.png")
            w.writerow([f"images/{stem}.png", f"masks/{stem}.png", pid])
    module = _load()
    module.build(cohen, archive, tmp_path / "truth")
    seg = tmp_path / "seg"
    report = module.segmenter_data(tmp_path / "truth", hannover, seg)
    assert report["pairs"] == 4
    pairs = find_pairs(seg / "images", seg / "masks", seg / "manifest.csv")
    train, val = grouped_split(pairs, 0.2, 0)
    assert held in {r.name for r in val} and "trainme" in {r.name for r in train}
    assert {r.patient_id for r in pairs} == {"hannover-9", "hannover-10", "cohen-1", "cohen-2"}
