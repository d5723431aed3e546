"""Check profiles (dicom.issues.CHECK_PROFILES): the validate stage applies every check; explain and
serving only those that concern the image itself, never site, patient id or PHI checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from isnetflow.config import ValidateConfig
from isnetflow.dicom import analyze
from isnetflow.dicom.issues import CHECK_PROFILES, DATASET_CODES, NOT_IMAGE_CODES, REASON_CODES
from isnetflow.validation.files import FileTask, process_file


def test_the_catalogue_marks_the_data_set_checks() -> None:
    assert DATASET_CODES.issubset(REASON_CODES)
    assert {"missing_identifier", "no_site", "phi", "malformed_uid"} <= DATASET_CODES
    assert CHECK_PROFILES["validate"] == set(REASON_CODES)
    assert CHECK_PROFILES["explain"] == set(REASON_CODES) - DATASET_CODES
    image = {"not_dicom", "transfer_syntax", "not_grayscale", "view", "modality", "decode_failed"}
    assert image | NOT_IMAGE_CODES <= CHECK_PROFILES["explain"]


def test_the_real_dicom_files_pass_the_image_checks_only(real_dicom_dir: Path) -> None:
    cfg = ValidateConfig()
    for path in sorted(real_dicom_dir.glob("*.dcm")):
        data = path.read_bytes()
        full = analyze(data, cfg)
        assert not full.ok and {i.code for i in full.issues if i.is_error} <= DATASET_CODES
        image = analyze(data, cfg, checks="explain")
        assert image.ok and image.image is not None and image.image.shape == (256, 256), image.issues
        assert not DATASET_CODES & {i.code for i in image.issues}


@pytest.mark.parametrize("name", ["notes.dcm", "empty.dcm"])
def test_a_non_image_is_still_refused_by_the_explain_profile(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"" if name == "empty.dcm" else b"not an image\n")
    task = FileTask(index=0, uri=str(path), relpath=name, patient_id=None, site=None)
    row = process_file(task, ValidateConfig(), str(tmp_path), checks="explain")
    assert row["status"] == "quarantined"
    assert row["reason_code"] == ("empty_file" if name == "empty.dcm" else "not_dicom")
