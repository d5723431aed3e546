"""The data fingerprint: independent of where the data lives and of row order; sensitive to content."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from isnetflow.stages.validate import MANIFEST_COLUMNS
from isnetflow.validation import data_fingerprint, manifest_fingerprint


def _manifest(root: str) -> pd.DataFrame:
    rows = [
        ("A/p1/1.dcm", "valid", "covid", "p1", "Alder", "internal", "a" * 64),
        ("A/p2/2.dcm", "valid", "normal", "p2", "Alder", "internal", "b" * 64),
        ("L/p3/3.dcm", "valid", "covid", "p3", "Lakeshore", "external", "c" * 64),
        ("L/p4/4.dcm", "quarantined", "normal", "p4", "Lakeshore", "external", "d" * 64),
    ]
    records = []
    for path, status, label, patient, site, role, sha in rows:
        rec: dict[str, object] = dict.fromkeys(MANIFEST_COLUMNS)
        rec.update(
            path=path,
            status=status,
            reason="" if status == "valid" else "bits stored > allocated",
            label=label,
            patient_id=patient,
            site=site,
            role=role,
            sha256=sha,
            uri=f"{root}/{path}",
            image=f"images/{sha[:8]}.png" if status == "valid" else None,
            mask=f"{root}/masks/{sha[:8]}.png",
        )
        records.append(rec)
    return pd.DataFrame(records, columns=MANIFEST_COLUMNS)


def _write(df: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True)
    df.to_csv(folder / "manifest.csv", index=False)
    return folder


def test_stable_under_location_row_order_and_non_data_columns(tmp_path: Path) -> None:
    a = _write(_manifest("/mnt/kfp/run-1/ingest/data/cohort/dicom"), tmp_path / "run1" / "validated")
    moved = _manifest("s3://bucket/elsewhere").iloc[::-1].copy()
    moved["reason"] = moved["reason"].str.upper()  # wording of a reason is not data
    moved["scale"] = 0.5
    b = _write(moved, tmp_path / "run2" / "somewhere" / "validated")
    fp = data_fingerprint(a)
    assert fp.startswith("v2:") and len(fp) == 3 + 64
    assert data_fingerprint(b) == fp
    assert data_fingerprint(a / "manifest.csv") == fp  # the file itself works too
    # the in-memory manifest (None cells) and the CSV read back ("" cells) agree
    assert manifest_fingerprint(_manifest("/x")) == fp


@pytest.mark.parametrize(
    ("column", "row", "value"),
    [
        ("label", 0, "normal"),  # relabelled
        ("sha256", 1, "e" * 64),  # file content changed
        ("status", 3, "valid"),  # now passes validation
        ("status", 0, "quarantined"),  # no longer trained on
        ("site", 2, "Mount Verity"),
        ("role", 2, "internal"),
        ("patient_id", 1, "p1"),  # patient grouping decides the splits
    ],
)
def test_changes_with_data(tmp_path: Path, column: str, row: int, value: str) -> None:
    base = manifest_fingerprint(_manifest("/data"))
    changed = _manifest("/data")
    changed.loc[row, column] = value
    assert manifest_fingerprint(changed) != base


def test_added_or_removed_files_change_it_and_errors_name_the_file(tmp_path: Path) -> None:
    df = _manifest("/data")
    base = manifest_fingerprint(df)
    assert manifest_fingerprint(df.iloc[1:]) != base  # a valid file removed
    assert manifest_fingerprint(pd.concat([df, df.iloc[[0]]])) != base  # a duplicate row counts
    with pytest.raises(ValueError, match=r"manifest\.csv: cannot read"):
        data_fingerprint(tmp_path)
    bad = tmp_path / "bad"
    _write(df.drop(columns=["sha256"]), bad)
    with pytest.raises(ValueError, match=r"bad/manifest\.csv: manifest lacks the column\(s\) sha256"):
        data_fingerprint(bad)


def test_quarantined_files_do_not_change_it(tmp_path: Path) -> None:
    """A stray file (sidecar, README, DICOMDIR) is quarantined and never trained on: adding or removing
    one is no reason to retrain, whatever its reason or (empty) header columns."""
    df = _manifest("/data")
    base = manifest_fingerprint(df)
    assert manifest_fingerprint(df.iloc[:3]) == base  # the quarantined row removed
    stray: dict[str, object] = dict.fromkeys(MANIFEST_COLUMNS)
    stray.update(path="A/notes.json", status="quarantined", reason="not a DICOM file", sha256="9" * 64)
    with_stray = pd.concat([df, pd.DataFrame([stray], columns=MANIFEST_COLUMNS)], ignore_index=True)
    assert manifest_fingerprint(with_stray) == base
    assert data_fingerprint(_write(with_stray, tmp_path / "stray")) == base
