"""The mask stage on a validated synthetic cohort: provided masks win, predictions are QC'd, failures
are quarantined with a reason, outputs are at the DICOM's resolution."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from isnetflow.config import MaskConfig, ValidateConfig
from isnetflow.masks.metrics import dice
from isnetflow.stages import masks as stage
from isnetflow.stages.validate import run as validate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def validated(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    info = json.loads((synth_cohort / "cohort.json").read_text())
    cfg = ValidateConfig(
        image_size=256, internal_sites=info["internal_sites"], external_sites=info["external_sites"]
    )
    out = tmp_path_factory.mktemp("validated")
    validate(cfg, synth_cohort / "dicom", out, labels=synth_cohort / "labels.csv")
    return out


def _check_outputs(out: Path, table: pd.DataFrame, manifest: pd.DataFrame) -> None:
    assert (out / "mask_qc.csv").is_file() and (out / "gallery.png").is_file()
    assert json.loads((out / "masks.json").read_text())["n_images"] == len(table)
    shapes = {r.sop_instance_uid: (r.rows, r.columns) for r in manifest.itertuples()}
    for r in table.itertuples():
        path = out / (r.mask if r.status == "ok" else r.quarantined_mask)
        arr = np.asarray(Image.open(path))
        assert arr.shape == shapes[r.sop_instance_uid]
        assert set(np.unique(arr)) <= {0, 255}
        assert (r.status == "ok") == (not isinstance(r.reason, str) or r.reason == "")


def test_provided_ground_truth_wins(synth_cohort: Path, validated: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(validated / "manifest.csv", dtype={"sop_instance_uid": str})
    result = stage.run(MaskConfig(), validated, tmp_path, provided_masks=synth_cohort / "masks")
    t = result.table
    assert len(t) == 60 and (t["source"] == "provided").all() and (t["status"] == "ok").all()
    assert result.summary["model"]["source"] == "not needed"
    assert result.summary["counts"] == {
        "images": 60,
        "ok": 60,
        "quarantined": 0,
        "provided": 60,
        "predicted": 0,
    }
    _check_outputs(tmp_path, t, manifest)
    uid = t["sop_instance_uid"].iloc[0]
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "masks" / f"{uid}.png")),
        np.asarray(Image.open(synth_cohort / "masks" / f"{uid}.png")),
    )


def test_predicted_masks_are_qcd(synth_cohort: Path, validated: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(validated / "manifest.csv", dtype={"sop_instance_uid": str})
    cfg = MaskConfig(use_provided=False, gallery_max=12)
    result = stage.run(cfg, validated, tmp_path, model_version="7")
    t = result.table
    assert (t["source"] == "predicted").all()
    assert (t["status"] == "ok").mean() >= 0.9, t.loc[t["status"] != "ok", "reason"].tolist()
    assert result.summary["model"]["registered_version"] == "7"
    assert result.summary["model"]["weights_sha256"]
    _check_outputs(tmp_path, t, manifest)
    scores = [
        dice(
            np.asarray(Image.open(tmp_path / r.mask)) > 127,
            np.asarray(Image.open(synth_cohort / "masks" / f"{r.sop_instance_uid}.png")) > 127,
        )
        for r in t.itertuples()
        if r.status == "ok"
    ]
    assert np.mean(scores) > 0.75  # phantom convention (heart cut out) differs from the model's


def test_bad_provided_mask_is_quarantined(synth_cohort: Path, validated: Path, tmp_path: Path) -> None:
    provided = tmp_path / "provided"
    shutil.copytree(synth_cohort / "masks", provided)
    victims: list[Any] = sorted(p.name for p in provided.iterdir())[:3]
    empty = np.zeros_like(np.asarray(Image.open(provided / victims[0])))
    Image.fromarray(empty).save(provided / victims[0])
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(provided / victims[1])
    (provided / victims[2]).write_bytes(b"not a png")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "stale.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not from a mask-stage run"):
        stage.run(MaskConfig(), validated, out, provided_masks=provided)
    (out / "masks" / "stale.png").unlink()
    for _ in range(2):  # a rerun into the same folder starts clean
        result = stage.run(MaskConfig(), validated, out, provided_masks=provided)
    t = result.table.set_index("sop_instance_uid")
    first, second, third = (Path(v).stem for v in victims)
    assert t.loc[first, "status"] == "quarantined" and "lung area" in t.loc[first, "reason"]
    assert t.loc[second, "status"] == "quarantined" and "5x5" in t.loc[second, "reason"]
    assert t.loc[third, "status"] == "quarantined" and "cannot read mask" in t.loc[third, "reason"]
    assert victims[2] in t.loc[third, "reason"]
    assert not (out / "masks" / victims[0]).exists()
    assert (out / "quarantine" / victims[0]).exists()
    assert result.summary["n_quarantined"] == 3
    assert len(list((out / "masks").iterdir())) == 57


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv"):
        stage.run(MaskConfig(), tmp_path, tmp_path / "out")


def test_mirror_check_measures_and_quarantines_in_the_stage(
    synth_cohort: Path, validated: Path, tmp_path: Path
) -> None:
    measured = stage.run(MaskConfig(use_provided=False, min_mirror_agreement=0.0), validated, tmp_path / "a")
    agreement = measured.table["mirror_agreement"]
    assert agreement.notna().all() and agreement.between(0.5, 1.0).all()
    assert (measured.table["status"] == "ok").mean() >= 0.9  # the threshold 0 quarantines nothing new
    off = stage.run(MaskConfig(use_provided=False), validated, tmp_path / "b")
    assert off.table["mirror_agreement"].isna().all()  # not measured unless asked
    strict = float(agreement.median())
    judged = stage.run(MaskConfig(use_provided=False, min_mirror_agreement=strict), validated, tmp_path / "c")
    unstable = judged.table["reason"].fillna("").str.contains("unstable: the mirrored image's mask agrees")
    assert unstable.sum() >= (agreement < strict).sum() > 0
