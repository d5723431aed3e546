"""``examples/public-cxr/build_labels.py``: filters, one site per source, the external development site,
licences, and a labels.csv that the validate stage accepts (pictures read, confound reported)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from isnetflow.config import ValidateConfig
from isnetflow.validation import parse_labels

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "public-cxr" / "build_labels.py"

META = [
    # patientid, finding, view, modality, location, url, filename, license
    ("1", "COVID-19", "PA", "X-ray", "Wuhan, China", "https://www.nejm.org/x", "c1.jpg", "CC BY"),
    ("2", "COVID-19, ARDS", "AP Supine", "X-ray", "Milan", "https://sirm.org/x", "c2.png", "CC BY-NC-SA"),
    ("3", "COVID-19", "L", "X-ray", "Milan", "https://sirm.org/y", "c3.jpg", "CC BY"),
    ("4", "COVID-19", "Axial", "CT", "Milan", "https://sirm.org/z", "c4.jpg", "CC BY"),
    ("5", "Pneumocystis", "PA", "X-ray", "Rome", "https://www.ncbi.nlm.nih.gov/x", "c5.jpg", "CC BY"),
    ("6", "COVID-19", "PA", "X-ray", "Sydney", "https://radiopaedia.org/x", "c6.jpg", "CC BY-NC-SA"),
    (
        "7",
        "COVID-19",
        "AP",
        "X-ray",
        "Hannover Medical School, Hannover, Germany",
        "https://github.com/x",
        "h1.jpg",
        "CC BY 3.0",
    ),
    (
        "8",
        "No Finding",
        "PA",
        "X-ray",
        "Hannover Medical School, Hannover, Germany",
        "https://github.com/y",
        "h2.jpg",
        "CC BY 3.0",
    ),
    ("9", "No Finding", "PA", "X-ray", "Tokyo, Japan", "https://www.sciencedirect.com/x", "n1.jpg", "CC BY"),
    ("10", "COVID-19", "PA", "X-ray", "Seoul", "https://www.nejm.org/y", "missing.jpg", "CC BY"),
]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_labels", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _picture(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64), dtype=np.uint8) + 40
    img[8:56, 6:28] = 120 + rng.integers(0, 60, (48, 22))  # two bright-ish lung fields, each image its own
    img[8:56, 36:58] = 120 + rng.integers(0, 60, (48, 22))
    Image.fromarray(img).save(path)


def _collections(tmp: Path) -> tuple[Path, Path]:
    cohen, openist = tmp / "covid-chestxray-dataset", tmp / "OpenIST"
    (cohen / "images").mkdir(parents=True)
    with (cohen / "metadata.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["patientid", "finding", "view", "modality", "location", "url", "folder", "filename", "license"]
        )
        for i, (pid, finding, view, modality, loc, url, name, lic) in enumerate(META):
            w.writerow([pid, finding, view, modality, loc, url, "images", name, lic])
            if name != "missing.jpg":
                _picture(cohen / "images" / name, i)
    folder = openist / "Datasets" / "Chest_x-ray"
    folder.mkdir(parents=True)
    for i in range(3):
        _picture(folder / f"{i}-9-500-500-100.jpg", 100 + i)
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / f"{i}-9-500-500-100@.png")
    return cohen, openist


def test_builder_filters_sites_and_licences(tmp_path: Path) -> None:
    module = _load()
    cohen, openist = _collections(tmp_path)
    out = tmp_path / "public-cxr"
    report = module.build(cohen, openist, out)
    labels = parse_labels((out / "labels.csv").read_bytes(), "labels.csv")
    rows = {r.path: r for r in labels.itertuples()}
    assert set(rows) == {
        "cohen/c1.jpg",
        "cohen/c2.png",
        "cohen/h1.jpg",
        "cohen/h2.jpg",
        *(f"openist/{i}-9-500-500-100.jpg" for i in range(3)),
    }
    assert rows["cohen/c2.png"].label == "covid" and rows["cohen/c2.png"].site == "Cohen web collection"
    assert rows["cohen/h2.jpg"].label == "normal" and rows["cohen/h2.jpg"].role == "external"
    assert rows["cohen/h1.jpg"].site == "Hannover Medical School"
    assert {r.site for r in labels.itertuples() if r.path.startswith("openist/")} == {"OpenIST teaching set"}
    assert report["left_out"] == {
        "view L is not frontal": 1,
        "not an X-ray (CT)": 1,
        "finding is neither COVID-19 nor No Finding": 1,
        "teaching site radiopaedia.org": 1,
        "a normal outside Hannover (its class would not follow its site)": 1,
        "image file missing from the clone": 1,
    }
    assert report["images"] == 7 == sum(report["per_site_and_label"].values())
    lic = {r["path"]: r["license"] for r in csv.DictReader((out / "licenses.csv").open())}
    assert lic["cohen/c2.png"] == "CC BY-NC-SA" and lic["cohen/h1.jpg"] == "CC BY 3.0"
    assert json.loads((out / "build_report.json").read_text())["external_sites"] == [
        "Hannover Medical School"
    ]
    # a second build over the same folder is the same (files already in place are kept)
    assert module.build(cohen, openist, out) == report


def test_built_folder_validates_with_the_confound_as_a_warning(tmp_path: Path) -> None:
    from isnetflow.stages import validate

    module = _load()
    cohen, openist = _collections(tmp_path)
    out = tmp_path / "public-cxr"
    module.build(cohen, openist, out)
    cfg = ValidateConfig(image_size=64)
    result = validate.run(cfg, out, tmp_path / "validated", labels=out / "labels.csv")
    manifest = result.manifest
    pictures = manifest[manifest.path.str.startswith(("cohen/", "openist/"))]
    assert len(pictures) == 7 and (pictures.status == "valid").all(), pictures[["path", "reason"]]
    confounded = result.summary["class_balance"]["confounded"]
    assert set(confounded) == {"Cohen web collection", "OpenIST teaching set"}  # Hannover holds both classes
