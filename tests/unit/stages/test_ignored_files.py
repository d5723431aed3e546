"""Every file found under the input is in the manifest: used (valid), quarantined with a reason, or
ignored with the rule that ignored it (``excluded``, ``labels_file``, ``provided_mask``, ``own_output``,
``not_dicom``, ``dicomdir``). One walk serves ``isnetflow validate`` and the pipeline's ingest stage."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from isnetflow.config import Settings, ValidateConfig
from isnetflow.dicom.source import scan_files
from isnetflow.stages import ingest
from isnetflow.stages.validate import run
from isnetflow.validation import read_manifest
from tests._strays import write_dicomdir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SITE = "Northfield University Hospital"

#: path -> (status, reason_code) for every file of the tree built by ``export``
EXPECTED = {
    "site-a/a.dcm": ("valid", ""),
    "site-a/b.dcm": ("valid", ""),
    "site-a/c.dcm": ("valid", ""),
    "site-a/IM0004": ("valid", ""),  # a DICOM without a file name extension is still an input
    "site-a/masks/img.dcm": ("valid", ""),  # a hospital folder named masks, deep in the tree: scanned
    "site-a/masks/overlay.png": ("ignored", "not_dicom"),  # not the provided masks folder
    "site-a/.DS_Store": ("ignored", "not_dicom"),  # hidden *file*: read, not DICOM, not named as one
    "bad.dcm": ("quarantined", "not_dicom"),  # named as DICOM but text: a damaged DICOM
    "scan-0005": ("quarantined", "not_dicom"),  # listed in labels.csv but text: claims to be an image
    "README": ("ignored", "not_dicom"),
    "series.json": ("ignored", "not_dicom"),
    "DICOMDIR": ("ignored", "dicomdir"),
    ".git/HEAD": ("ignored", "excluded"),
    ".git/objects/x": ("ignored", "excluded"),
    ".archive/old.dcm": ("ignored", "excluded"),  # excluded although labels.csv lists it
    "labels.csv": ("ignored", "labels_file"),
    # masks/<SOPInstanceUID>.png beside labels.csv: one per valid DICOM, added by ``export``
}


def _copy_with_new_uid(src: Path, dst: Path, *, mirror: bool = False) -> str:
    """A copy with a new SOPInstanceUID; ``mirror``: its pixels flipped left-right, another image (the same
    pixels would be a duplicate image, quarantined as such)."""
    ds = pydicom.dcmread(src)
    if mirror:
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return uid


@pytest.fixture(scope="module")
def export(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An input tree with every kind of file a real export (or a checked-out repository) holds."""
    root = tmp_path_factory.mktemp("ignored") / "export"
    labels = pd.read_csv(synth_cohort / "labels.csv")
    rows = labels[labels["site"] == SITE].head(6).to_dict("records")
    listed = ["site-a/a.dcm", "site-a/b.dcm", "site-a/c.dcm", "site-a/IM0004", "site-a/masks/img.dcm"]
    uids = []
    for rel, rec in zip(listed, rows, strict=False):
        uids.append(_copy_with_new_uid(synth_cohort / rec["path"], root / rel))
    (root / "masks").mkdir()
    for uid in uids:  # the provided lung masks, beside labels.csv
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(root / "masks" / f"{uid}.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "site-a" / "masks" / "overlay.png")
    (root / "site-a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 4)
    (root / "bad.dcm").write_text("patient list\nthis is not an image\n" * 10)
    (root / "scan-0005").write_text("exported by a script that lost the pixels\n")
    (root / "README").write_text("Exported from PACS.\n")
    (root / "series.json").write_text(json.dumps({"Modality": "CR"}))
    write_dicomdir(root / "site-a" / "a.dcm", root / "DICOMDIR")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "objects" / "x").write_bytes(b"x\x01" + bytes(64))
    _copy_with_new_uid(synth_cohort / rows[5]["path"], root / ".archive" / "old.dcm")
    base = {k: rows[0][k] for k in ("label", "patient_id", "site")}
    table = [{**rec, "path": rel} for rel, rec in zip(listed, rows, strict=False)]
    table += [{**base, "path": "scan-0005"}, {**base, "path": ".archive/old.dcm"}]
    pd.DataFrame(table).to_csv(root / "labels.csv", index=False)
    return root


def _on_disk(root: Path) -> set[str]:
    """Every file under ``root``, as os.walk finds it (hidden folders included)."""
    return {(Path(d) / f).relative_to(root).as_posix() for d, _, fs in os.walk(root) for f in fs}


def _expected(root: Path) -> dict[str, tuple[str, str]]:
    masks = {f"masks/{p.name}": ("ignored", "provided_mask") for p in (root / "masks").iterdir()}
    return {**EXPECTED, **masks}


@pytest.fixture(scope="module")
def validated(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ignored_out")
    cfg = ValidateConfig(image_size=32, min_images_per_site=1, min_pass_rate=0.7, workers=1)
    run(cfg, export, out, labels=export / "labels.csv")
    return out


def test_every_file_found_has_one_row_with_its_status_and_rule(export: Path, validated: Path) -> None:
    out = validated
    m = read_manifest(out)
    assert len(m) == len(set(m["path"])) == len(_on_disk(export))  # one row per file, none added
    assert set(m["path"]) == _on_disk(export)
    got = {r["path"]: (r["status"], r["reason_code"]) for r in m.to_dict("records")}
    assert got == _expected(export)
    assert (m.loc[m["status"] != "valid", "reason"].str.strip() != "").all()  # every rule is named
    assert not m["reason"].str.contains("\n").any()


def test_reasons_name_the_rule(export: Path, validated: Path) -> None:
    out = validated
    reason = read_manifest(out).set_index("path")["reason"]
    assert reason[".git/objects/x"] == "excluded by validate.exclude pattern '.*/' (matches .git/)"
    assert reason[".archive/old.dcm"] == (
        "excluded by validate.exclude pattern '.*/' (matches .archive/) (listed in labels.csv)"
    )
    assert reason["labels.csv"] == "the labels file of this validation"
    mask = next(p for p in reason.index if p.startswith("masks/"))
    assert reason[mask] == f"a provided lung mask (in {(export / 'masks').resolve()})"
    assert reason["README"].endswith("not named .dcm/.dicom/.dic nor listed in the labels")
    assert reason["bad.dcm"].startswith("not a DICOM file")


def test_pass_rate_and_counts_leave_the_ignored_files_out(export: Path, validated: Path) -> None:
    out = validated
    summary = json.loads((out / "validation.json").read_text())
    n_masks = len(list((export / "masks").iterdir()))
    assert summary["counts"] == {"valid": 5, "quarantined": 2, "ignored": 9 + n_masks}
    assert summary["files"] == len(_on_disk(export))
    assert summary["pass_rate"] == round(5 / 7, 6) and summary["passed"], summary["failure"]
    assert summary["reasons"] == {"not_dicom": 2}
    assert summary["ignored_reasons"] == {
        "dicomdir": 1,
        "excluded": 3,
        "labels_file": 1,
        "not_dicom": 4,
        "provided_mask": n_masks,
    }
    # ignored files belong to no site: the unlisted bad.dcm alone has none
    assert summary["sites"]["(unknown)"]["files"] == 1 and summary["sites"][SITE]["files"] == 6
    html = (out / "validation.html").read_text()
    assert "Ignored files (the rule)" in html and "provided_mask" in html


def test_later_stages_never_see_an_ignored_row(validated: Path) -> None:
    out = validated
    valid = read_manifest(out, valid_only=True)
    assert sorted(valid["path"]) == sorted(p for p, (s, _) in EXPECTED.items() if s == "valid")
    assert (valid["status"] == "valid").all()


def test_scan_returns_the_excluded_files_with_their_pattern(export: Path) -> None:
    files, excluded = scan_files(export, exclude=(".*/", "*.json"))
    assert {e.file.relpath: (e.pattern, e.component) for e in excluded} == {
        ".archive/old.dcm": (".*/", ".archive/"),
        ".git/HEAD": (".*/", ".git/"),
        ".git/objects/x": (".*/", ".git/"),
        "series.json": ("*.json", "series.json"),
    }
    assert {f.relpath for f in files} | {e.file.relpath for e in excluded} == _on_disk(export)
    assert all(e.file.size is not None and Path(e.file.uri).is_file() for e in excluded)


def test_ingest_user_mode_scans_every_folder_but_the_side_files(synth_cohort: Path, tmp_path: Path) -> None:
    """The pipeline's ingest in user mode: the labels file and the masks/ folder beside it are listed as
    ignored; a hospital sub-folder named ``masks`` (or a file named like the labels file) deeper in the
    tree is scanned like any other folder, not skipped."""
    root = tmp_path / "in"
    shutil.copytree(synth_cohort / "dicom", root)
    shutil.copytree(synth_cohort / "masks", root / "masks")
    labels = pd.read_csv(synth_cohort / "labels.csv")
    labels["path"] = labels["path"].str.removeprefix("dicom/")
    src = labels[labels["site"] == SITE].iloc[0]
    site_dir = root / Path(src["path"]).parts[0]
    deep = f"{site_dir.name}/masks/extra.dcm"
    _copy_with_new_uid(root / src["path"], root / deep, mirror=True)
    (site_dir / "labels.csv").write_text("path,label\nnot-ours.dcm,normal\n")  # a hospital's own list
    labels = pd.concat([labels, pd.DataFrame([{**src.to_dict(), "path": deep}])], ignore_index=True)
    labels.to_csv(root / "labels.csv", index=False)

    s = Settings()
    vcfg = s.validate.model_copy(update={"image_size": 32, "workers": 1})
    s = s.model_copy(update={"validate": vcfg})
    info = json.loads((synth_cohort / "cohort.json").read_text())
    summary = ingest.run(s, tmp_path / "out", input_uri=str(root), external_sites=info["external_sites"])
    assert summary["passed"], summary["reason"]
    assert summary["provided_masks"] == str((root / "masks").resolve())

    m = read_manifest(tmp_path / "out" / "validated").set_index("path")
    assert set(m.index) == _on_disk(root)
    assert (m.loc[deep, "status"], m.loc[deep, "reason_code"]) == ("valid", "")
    assert (m.loc["labels.csv", "status"], m.loc["labels.csv", "reason_code"]) == ("ignored", "labels_file")
    own_list = f"{site_dir.name}/labels.csv"
    assert (m.loc[own_list, "status"], m.loc[own_list, "reason_code"]) == ("ignored", "not_dicom")
    masks = m[m.index.str.startswith("masks/")]
    assert len(masks) == 60 and (masks["status"] == "ignored").all()
    assert (masks["reason_code"] == "provided_mask").all()
    counts = summary["validation"]["counts"]
    assert counts == {"valid": 61, "quarantined": 0, "ignored": 62}
    assert summary["validation"]["pass_rate"] == 1.0
