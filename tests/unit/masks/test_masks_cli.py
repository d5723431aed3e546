"""`isnetflow segment` round trips on DICOM and PNG at the original resolution; `bench segment`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.masks.io import read_image
from isnetflow.masks.metrics import dice

runner = CliRunner()


def _cohort_files(cohort: Path, k: int) -> list[tuple[Path, Path]]:
    rows = list(csv.DictReader((cohort / "truth.csv").open()))[::10][:k]
    return [(cohort / r["path"], cohort / r["mask"]) for r in rows]


def test_segment_dicom_and_png_round_trip(synth_cohort: Path, tmp_path: Path) -> None:
    files = _cohort_files(synth_cohort, 4)
    dicom_dir = tmp_path / "dicom"
    dicom_dir.mkdir()
    for dcm, _ in files[:3]:
        shutil.copy(dcm, dicom_dir / dcm.name)
    # A PNG with a different (non-square) shape: the 4th phantom, written as 8-bit PNG.
    image = read_image(files[3][0]).pixels
    png = tmp_path / "phantom.png"
    Image.fromarray((image * 255).astype(np.uint8)).save(png)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["segment", "--input", str(dicom_dir), "--input", str(png), "--out", str(out), "--overlays"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["n_segmented"] == 4 and summary["n_unreadable"] == 0
    for src, truth in files:
        stem = "phantom" if src == files[3][0] else src.stem
        mask = np.asarray(Image.open(out / f"{stem}.png"))
        gt = np.asarray(Image.open(truth)) > 127
        assert mask.shape == gt.shape == read_image(src).pixels.shape  # original resolution
        assert set(np.unique(mask)) <= {0, 255}
        # Phantom masks cut the heart out; the model follows the real convention (lung behind it), so
        # Dice against the phantom mask is lower than on real images; 0.7 still means "the lungs".
        assert dice(mask > 127, gt) > 0.7, stem
        assert (out / "overlays" / f"{stem}.png").is_file()
    table = list(csv.DictReader((out / "segment.csv").open()))
    assert len(table) == 4 and {r["status"] for r in table} <= {"ok", "qc_failed"}


def test_segment_reports_unreadable_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    result = runner.invoke(app, ["segment", "--input", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "broken.png" in (tmp_path / "o" / "segment.csv").read_text()
    result = runner.invoke(app, ["segment", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "nope" in result.output


def test_bench_segment_json() -> None:
    result = runner.invoke(app, ["bench", "segment", "--json", "--n", "3", "--size", "96"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["n"] == 3 and data["image_size"] == 96 and data["device"] == "cpu"
    assert data["images_per_s"] > 0
