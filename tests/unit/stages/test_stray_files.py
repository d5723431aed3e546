"""User data as it arrives: stray files beside the DICOMs are ignored and never reach a later stage.

A real export holds a DICOMDIR, JSON/CSV sidecars, a README and the desktop's .DS_Store / Thumbs.db.
Each must be in the manifest, ignored with the rule that ignored it, and the stages after validation
must work on the valid rows as if the stray files were not there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from isnetflow.config import MaskConfig, Settings, ValidateConfig
from isnetflow.stages import masks as masks_stage
from isnetflow.stages.validate import run as validate
from isnetflow.training import load_train_data
from isnetflow.validation import data_fingerprint, read_manifest
from tests._strays import STRAY, STRAY_STATUS, add_stray_files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(cohort: Path) -> ValidateConfig:
    info = json.loads((cohort / "cohort.json").read_text())
    return ValidateConfig(
        image_size=64, internal_sites=info["internal_sites"], external_sites=info["external_sites"]
    )


@pytest.fixture(scope="module")
def stray_cohort(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("stray") / "cohort"
    shutil.copytree(synth_cohort, root)
    return root, add_stray_files(root / "dicom")


@pytest.fixture(scope="module")
def stray_validated(stray_cohort: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = stray_cohort
    out = tmp_path_factory.mktemp("stray_validated")
    validate(_cfg(root), root / "dicom", out, labels=root / "labels.csv")
    return out


def test_every_stray_file_is_ignored_with_its_reason(
    stray_cohort: tuple[Path, list[str]], stray_validated: Path
) -> None:
    _, strays = stray_cohort
    m = read_manifest(stray_validated).set_index("path")
    for rel in strays:
        row = m.loc[rel]
        assert row["status"] == STRAY_STATUS and row["reason"], rel
        assert row["reason_code"] == STRAY[Path(rel).name], (rel, row["reason"])
    assert m.loc["DICOMDIR", "reason"].startswith("DICOMDIR (Media Storage Directory)")
    assert m.loc["README", "reason"].endswith("not named .dcm/.dicom/.dic nor listed in the labels")
    summary = json.loads((stray_validated / "validation.json").read_text())
    # the stray files are listed but are not images: the 60 DICOM files pass at rate 1.0
    assert summary["counts"] == {"valid": 60, "quarantined": 0, "ignored": 6} and summary["not_images"] == 6
    assert summary["ignored_reasons"] == {"dicomdir": 1, "not_dicom": 5}
    assert summary["pass_rate"] == 1.0 and summary["passed"]


def test_later_stages_see_only_the_valid_rows(
    stray_cohort: tuple[Path, list[str]], stray_validated: Path, tmp_path: Path
) -> None:
    root, _ = stray_cohort
    cfg = Settings().train.model_copy(update={"image_size": 32})
    data = load_train_data(stray_validated, root / "masks", cfg)  # crashed on '320.0' before
    assert len(data) == 60 and data.images.shape[1:] == (1, 32, 32)
    valid = read_manifest(stray_validated, valid_only=True)
    assert sorted(data.keys) == sorted(valid["sop_instance_uid"])
    masks = masks_stage.run(MaskConfig(), stray_validated, tmp_path / "masks", provided_masks=root / "masks")
    assert len(masks.table) == 60 and (masks.table["status"] == "ok").all()
    assert not set(masks.table["path"]) & set(STRAY)
    assert np.isfinite(data.images.numpy()).all()


def test_stray_files_do_not_change_the_data_fingerprint(
    synth_cohort: Path, stray_validated: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    validate(_cfg(synth_cohort), synth_cohort / "dicom", clean, labels=synth_cohort / "labels.csv")
    assert data_fingerprint(stray_validated) == data_fingerprint(clean)
