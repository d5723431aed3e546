"""``splits.csv``: the stored held-out patient list equals the recomputed split; a changed one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from isnetflow.config import TrainConfig
from isnetflow.training import TrainDataError, load_train_data
from isnetflow.training.splitfile import (
    SPLITS_FILE,
    SplitFileError,
    SplitRow,
    digest,
    held_out_rows,
    read_splits,
    split_of_patient,
    write_splits,
)
from isnetflow.training.splits import UNLISTED, apply_held_out, assign_splits


def test_the_stored_split_of_a_tiny_cohort_is_the_recomputed_one(
    tiny_validated: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    cfg = TrainConfig(image_size=32, val_fraction=0.3, test_fraction=0.2, seed=3)
    data = load_train_data(tiny_validated, tiny_cohort / "masks", cfg, classes=["normal", "covid"])
    stored = write_splits(held_out_rows(data.patient_ids, data.sites, data.splits), tmp_path)
    assert stored.path == tmp_path / SPLITS_FILE and stored.sha256 == digest(stored.path.read_bytes())
    rows = read_splits(stored.path, expected_sha256=stored.sha256)
    internal = {p for p, sp in zip(data.patient_ids, data.splits, strict=True) if sp != "external"}
    assert {r.patient_id for r in rows} == internal and {r.split for r in rows} == {"train", "val", "test"}
    # the evaluation's split from the file is the one assign_splits computes, image for image
    again = load_train_data(
        tiny_validated,
        tiny_cohort / "masks",
        cfg,
        classes=["normal", "covid"],
        held_out=split_of_patient(rows),
    )
    assert again.splits == data.splits and again.keys == data.keys
    # deterministic bytes: writing the same split again gives the same digest
    (tmp_path / "again").mkdir()
    assert write_splits(reversed(rows), tmp_path / "again").sha256 == stored.sha256


def test_a_changed_splits_csv_is_refused_naming_the_file(tmp_path: Path) -> None:
    rows = [SplitRow("P1", "A", "train"), SplitRow("P2", "A", "test"), SplitRow("P3", "B", "val")]
    stored = write_splits(rows, tmp_path)
    text = stored.path.read_text()
    stored.path.write_text(text.replace("P2,A,test", "P2,A,train"))  # a held-out patient moved to train
    with pytest.raises(SplitFileError, match=rf"{stored.path}: SHA-256 .* does not match") as err:
        read_splits(stored.path, expected_sha256=stored.sha256)
    assert "\n" not in str(err.value)
    # right digest, wrong content: still refused, naming the file
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,split\nP1,train\n")
    with pytest.raises(SplitFileError, match=rf"{bad}: not a held-out patient list"):
        read_splits(bad, expected_sha256=digest(bad.read_bytes()))
    with pytest.raises(SplitFileError, match="cannot read"):
        read_splits(tmp_path / "missing.csv", expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="P1"):
        write_splits([*rows, SplitRow("P1", "B", "val")], tmp_path)


def test_applying_a_stored_split() -> None:
    pids = ["P1", "P1", "P2", "NEW", "X1"]
    roles = ["internal", "internal", "internal", "internal", "external"]
    held = {"P1": "train", "P2": "test"}
    assert apply_held_out(pids, roles, held) == ["train", "train", "test", UNLISTED, "external"]
    with pytest.raises(ValueError, match="'P2' is at an external site"):
        apply_held_out(["P2"], ["external"], held)
    # the same patients get the same labels as the recomputation they were written from
    many = [f"P{i // 2}" for i in range(200)]
    rec = assign_splits(many, ["internal"] * 200, val_fraction=0.2, test_fraction=0.2, seed=4)
    rows = held_out_rows(many, ["S"] * 200, rec)
    assert apply_held_out(many, ["internal"] * 200, split_of_patient(rows)) == rec


def test_load_train_data_names_the_manifest_on_leakage(tiny_validated: Path, tiny_cohort: Path) -> None:
    cfg = TrainConfig(image_size=32)
    data = load_train_data(tiny_validated, tiny_cohort / "masks", cfg, classes=["normal", "covid"])
    ext = next(p for p, sp in zip(data.patient_ids, data.splits, strict=True) if sp == "external")
    with pytest.raises(TrainDataError, match=r"manifest\.csv: patient .* external site"):
        load_train_data(tiny_validated, tiny_cohort / "masks", cfg, held_out={ext: "train"})
