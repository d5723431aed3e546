"""Stray files as a real export has them beside its DICOMs (shared by the stage and pipeline tests)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

#: stray file name (inside the DICOM folder) -> expected reason code; none is named as a DICOM file, so
#: each is listed with status :data:`STRAY_STATUS` (not counted in the pass rate, never used later)
STRAY_STATUS = "ignored"
STRAY = {
    "series.json": "not_dicom",
    "export.csv": "not_dicom",
    "README": "not_dicom",
    ".DS_Store": "not_dicom",
    "Thumbs.db": "not_dicom",
    "DICOMDIR": "dicomdir",
}


def write_dicomdir(dicom_file: Path, target: Path) -> None:
    """A real DICOMDIR (pydicom's FileSet) indexing ``dicom_file``; only the DICOMDIR is copied."""
    ds = pydicom.dcmread(dicom_file)
    ds = copy.deepcopy(ds)
    for kw, value in (("StudyDate", "20240101"), ("StudyTime", "120000"), ("StudyID", "1")):
        setattr(ds, kw, getattr(ds, kw, None) or value)
    ds.SeriesNumber, ds.InstanceNumber = ds.get("SeriesNumber") or 1, ds.get("InstanceNumber") or 1
    staging = target.parent / f".{target.name}-fileset"
    fs = FileSet()
    fs.add(ds)
    fs.write(staging)
    shutil.copy(staging / "DICOMDIR", target)
    shutil.rmtree(staging)


def add_stray_files(dicom_dir: Path) -> list[str]:
    """Put every kind of stray file into ``dicom_dir`` (top level and one site folder); returns their
    paths relative to ``dicom_dir``."""
    site = sorted(p for p in dicom_dir.iterdir() if p.is_dir())[0]
    (dicom_dir / "series.json").write_text(json.dumps({"Modality": "CR", "Rows": 320, "Columns": 256}))
    (dicom_dir / "export.csv").write_text("path,rows,columns\na.dcm,320,256\n")
    (dicom_dir / "README").write_text("Exported from PACS. Images under the site folders.\n")
    (site / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 4)
    (site / "Thumbs.db").write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 504)
    write_dicomdir(next(site.rglob("*.dcm")), dicom_dir / "DICOMDIR")
    return [
        "series.json",
        "export.csv",
        "README",
        "DICOMDIR",
        f"{site.name}/.DS_Store",
        f"{site.name}/Thumbs.db",
    ]
