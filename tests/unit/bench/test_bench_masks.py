"""``isnetflow bench masks``: source layouts, the JSRT convention, the QC's fragment measure, and the
bench itself on the real Hannover radiographs (skipped without ``../shared/data``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isnetflow.bench.masks import (
    BAD_DICE,
    bench_masks,
    convention_ignore,
    find_truth_pairs,
    parse_source,
)
from isnetflow.cli import app
from isnetflow.config import MaskConfig
from isnetflow.masks.metrics import dice
from isnetflow.masks.postprocess import fragment_fraction
from isnetflow.masks.qc import assess


def _lungs(rows: int = 100, cols: int = 100) -> np.ndarray:
    m = np.zeros((rows, cols), dtype=bool)
    m[20:80, 15:42] = True
    m[20:80, 58:85] = True
    return m


def test_far_blobs_are_not_fragments_but_a_split_lung_is() -> None:
    lungs = _lungs()
    far = lungs.copy()
    far[85:100, 0:8] = True  # a dark corner far from the lungs: dropped harmlessly
    assert fragment_fraction(far, lungs) == 0.0
    split = lungs.copy()
    split[20:80, 45:50] = True  # a strip split off between the lungs
    kept = lungs
    assert fragment_fraction(split, kept) == pytest.approx(300 / split.sum())
    near = lungs.copy()
    near[81:84, 20:40] = True  # just below a lung, inside the margin
    assert fragment_fraction(near, lungs) > 0
    assert fragment_fraction(np.zeros((10, 10), bool), np.zeros((10, 10), bool)) == 0.0


def test_a_split_lung_fails_qc_and_a_far_blob_does_not() -> None:
    lungs = _lungs()
    far = lungs.copy()
    far[90:100, 0:30] = True
    ok = assess(lungs, MaskConfig(), fragment_fraction=fragment_fraction(far, lungs), confidence=0.95)
    assert ok.passed, ok.reason
    split = lungs.copy()
    split[20:80, 43:57] = True
    bad = assess(lungs, MaskConfig(), fragment_fraction=fragment_fraction(split, lungs), confidence=0.95)
    assert not bad.passed and "fragmented" in bad.reason and "near the lungs" in bad.reason


def test_jsrt_convention_ignores_the_mediastinum_only() -> None:
    ref = _lungs()
    no_ignore = np.zeros_like(ref)
    ignored = convention_ignore(ref, no_ignore, "jsrt")
    assert ignored[50, 50] and not ignored[5, 5] and not ignored[50, 20]
    # A v7labs-like prediction covering the region between the lungs is not penalized against a JSRT mask ...
    wide = ref.copy()
    wide[30:80, 42:58] = True
    assert dice(wide, ref, ignored) == pytest.approx(1.0)
    assert dice(wide, ref, no_ignore) < 0.95
    # ... while a spill outside the two lungs' hull (into the neck) still counts.
    neck = ref.copy()
    neck[0:20, 40:60] = True
    assert dice(neck, ref, ignored) < 1.0
    assert convention_ignore(ref, no_ignore, "v7labs") is no_ignore
    with pytest.raises(ValueError, match="unknown mask convention"):
        convention_ignore(ref, no_ignore, "montgomery")


def _write_pair(folder: Path, stem: str, mask_name: str) -> None:
    img = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)
    Image.fromarray(img).save(folder / f"{stem}.jpg")
    Image.fromarray((_lungs(40, 50) * 255).astype(np.uint8)).save(folder / mask_name)


def test_source_layouts(tmp_path: Path) -> None:
    suffix = tmp_path / "OpenIST" / "Datasets" / "Chest_x-ray"
    suffix.mkdir(parents=True)
    for stem in ("1-10", "2-20"):
        _write_pair(suffix, stem, f"{stem}@.png")
    (suffix / "3-30.jpg").write_bytes((suffix / "1-10.jpg").read_bytes())  # no mask: not a pair
    pairs, convention = find_truth_pairs("openist", tmp_path / "OpenIST")
    assert [p.name for p in pairs] == ["1-10", "2-20"] and convention == "jsrt"

    manifest = tmp_path / "site"
    (manifest / "images").mkdir(parents=True)
    (manifest / "masks").mkdir()
    _write_pair(manifest / "images", "a", "../masks/a.png")
    (manifest / "manifest.csv").write_text("image,mask,patient_id\nimages/a.jpg,masks/a.png,p1\n")
    pairs, convention = find_truth_pairs("mysite", manifest)
    assert [p.name for p in pairs] == ["a"] and convention == "v7labs"
    (manifest / "manifest.csv").write_text("image,mask,patient_id\nimages/b.jpg,masks/b.png,p1\n")
    with pytest.raises(ValueError, match="missing"):
        find_truth_pairs("mysite", manifest)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_truth_pairs("openist", tmp_path / "nowhere")


def test_parse_source() -> None:
    assert parse_source("openist=/data/OpenIST") == ("openist", Path("/data/OpenIST"))
    assert parse_source("hannover")[0] == "hannover"
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_source("openist")
    result = CliRunner().invoke(app, ["bench", "masks", "--source", "=x"])
    assert result.exit_code == 2 and "NAME=PATH" in result.output


@pytest.mark.data
def test_bench_on_real_hannover_images(shared_data: Path, tmp_path: Path) -> None:
    out = bench_masks([("hannover", shared_data / "real-cxr-lungs")], limit=6, out=tmp_path, progress=False)
    block = out["sources"]["hannover"]
    assert block["trained_on"] and block["convention"] == "v7labs"
    assert block["clean"]["n"] == 6
    # Measured on all 84 (docs/segmenter.md): Dice 0.963, 0.956 on the held-out patients, none quarantined.
    assert block["clean"]["dice"]["mean"] >= 0.93
    assert block["clean"]["good_quarantined"]["count"] == 0
    assert block["held_out"]["n"] <= 6
    rows = (tmp_path / "mask_bench.csv").read_text().splitlines()
    assert len(rows) == 7 and "dice" in rows[0]
    assert Image.open(tmp_path / "mask_bench_gallery.png").size[0] > 500
    assert out["bad_dice"] == BAD_DICE
    json.dumps(out)  # JSON-able


def test_another_draw_perturbs_the_same_images_with_other_parameters(
    shared_data: Path, tmp_path: Path
) -> None:
    import csv
    import shutil

    real = shared_data / "real-cxr-lungs"
    site = (
        tmp_path / "site"
    )  # one real radiograph as a source of its own: every image is unseen, so perturbed
    (site / "images").mkdir(parents=True)
    (site / "masks").mkdir()
    with (real / "manifest.csv").open() as f:
        first = next(csv.DictReader(f))
    shutil.copy(real / first["image"], site / "images" / "a.png")
    shutil.copy(real / first["mask"], site / "masks" / "a.png")
    (site / "manifest.csv").write_text("image,mask,patient_id\nimages/a.png,masks/a.png,p1\n")

    def rows(draw: int) -> dict[str, dict[str, str]]:
        out = bench_masks(
            [("site", site)], perturb=True, draw=draw, out=tmp_path / f"d{draw}", progress=False
        )
        assert out["perturb_draw"] == draw
        with (tmp_path / f"d{draw}" / "mask_bench.csv").open() as f:
            return {r["variant"]: r for r in csv.DictReader(f)}

    zero, again, one = rows(0), rows(0), rows(1)
    assert len(zero) == 15 and zero.keys() == one.keys()  # the clean image and the 14 perturbations
    assert zero == again  # a draw is a function of its number
    assert zero["clean"]["dice"] == one["clean"]["dice"]
    moved = [v for v in zero if v != "clean" and zero[v]["dice"] != one[v]["dice"]]
    assert "hospital_mix" in moved  # random parameters: another draw, another image
    result = CliRunner().invoke(app, ["bench", "masks", "--perturb", "--draw", "-1"])
    assert result.exit_code == 2


@pytest.mark.data
def test_bench_on_openist_when_cloned(tmp_path: Path) -> None:
    root = os.environ.get("ISNETFLOW_OPENIST")
    if not root or not Path(root).is_dir():
        pytest.skip("OpenIST clone not found: set ISNETFLOW_OPENIST to a clone of pi-null-mezon/OpenIST")
    out = bench_masks([("openist", Path(root))], limit=20, progress=False)
    block = out["sources"]["openist"]
    assert block["convention"] == "jsrt"
    assert block["clean"]["dice"]["mean"] >= 0.93  # 0.978 on all 275 (README)
    assert block["clean"]["dice_raw"]["mean"] < block["clean"]["dice"]["mean"]


@pytest.mark.data
def test_bench_on_the_collection_when_built(tmp_path: Path) -> None:
    root = os.environ.get("ISNETFLOW_COHEN_V7LABS")
    if not root or not (Path(root) / "manifest.csv").is_file():
        pytest.skip(
            "COVID-19 collection truth folder not found: build it with "
            "examples/public-cxr/build_mask_truth.py and set ISNETFLOW_COHEN_V7LABS to it"
        )
    out = bench_masks([("cohen", Path(root))], limit=40, progress=False)
    block = out["sources"]["cohen"]
    assert block["convention"] == "v7labs" and block["trained_on"]  # half of its patients fine-tuned it
    held = block["held_out"]
    assert 0 < held["n"] < block["clean"]["n"]
    assert held["dice"]["mean"] >= 0.93  # 0.950 on all 140 held-out images (docs/segmenter.md)
    assert held["kept"]["share"] >= 0.95
