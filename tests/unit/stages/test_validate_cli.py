"""``isnetflow validate``: exit status 0 / 1 / 2 with one-line reasons; options and --config work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from isnetflow.cli import app


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["validate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_good_cohort_exits_zero(synth_cohort: Path, tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("validate:\n  image_format: png\n  image_size: 48\n  workers: 1\n")
    code, _, err = _invoke(
        "--input", str(synth_cohort / "dicom"), "--labels", str(synth_cohort / "labels.csv"),
        "--out", str(tmp_path / "out"), "--config", str(config),
    )  # fmt: skip
    assert code == 0, err
    assert (
        "60 valid, 0 quarantined, 0 ignored of 60 files (pass rate 1.000 over 60 DICOM files), "
        "expectations passed" in err
    )
    summary = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert summary["passed"] and summary["images"] == {"dir": "images", "size": 48, "format": "png"}
    png = next((tmp_path / "out" / "images").glob("*.png"))
    with Image.open(png) as im:
        assert im.size == (48, 48) and np.asarray(im).dtype == np.uint16  # 16-bit grayscale PNG


def test_low_pass_rate_exits_non_zero_with_one_line(synth_cohort: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(synth_cohort / "dicom", src)
    for i, f in enumerate(sorted(src.rglob("*.dcm"))[:12]):  # 12 of 60 broken: pass rate 0.8 < 0.9
        f.write_bytes(f.read_bytes()[: 200 + i])
    code, _, err = _invoke("--input", str(src), "--out", str(tmp_path / "out"), "--image-size", "32")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("validation failed: pass rate 0.800 < 0.9 (12 of 60 DICOM files quarantined;")
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["passed"] is False
    # the threshold is an option: the same input passes at 0.75 (given fewer images per site suffice)
    config = tmp_path / "c.yaml"
    config.write_text("validate:\n  min_images_per_site: 5\n")
    code, _, err = _invoke(
        "--input", str(src), "--out", str(tmp_path / "out2"), "--min-pass-rate", "0.75", "-c", str(config)
    )
    assert code == 0, err


def test_unusable_labels_exit_two_naming_the_file(synth_cohort: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,diagnosis\nx.dcm,normal\n")
    code, _, err = _invoke(
        "--input", str(synth_cohort / "dicom"), "--labels", str(labels), "--out", str(tmp_path)
    )
    assert code == 2
    assert err.strip() == (
        f"error: {labels}: unknown column layout filename,diagnosis "
        "(missing path, label; unknown 'filename', 'diagnosis'); "
        "expected path,label[,patient_id][,site][,mask][,role]"
    )
