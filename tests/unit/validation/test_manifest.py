"""The one manifest reader: explicit types, whatever the quarantined and ignored rows leave empty."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from isnetflow.validation.manifest import (
    MANIFEST_COLUMNS,
    ManifestError,
    manifest_sha256,
    read_manifest,
    write_manifest,
)


def _rows() -> pd.DataFrame:
    recs: list[dict[str, object]] = []
    for path, status, reason, rows, cols in [
        ("A/p1/1.dcm", "valid", "", 320, 256),
        ("A/notes.json", "quarantined", "not a DICOM file (File is missing DICOM File Meta...)", None, None),
        ("DICOMDIR", "ignored", "DICOMDIR (Media Storage Directory): a file-set index", None, None),
    ]:
        rec: dict[str, object] = dict.fromkeys(MANIFEST_COLUMNS)
        rec.update(path=path, status=status, reason=reason, rows=rows, columns=cols, patient_id="007")
        if status == "valid":
            rec.update(scale=0.25, pad_top=12, image="images/1.npy", sop_instance_uid="1.2.3")
        recs.append(rec)
    return pd.DataFrame(recs, columns=MANIFEST_COLUMNS)


def test_integers_stay_integers_beside_quarantined_rows(tmp_path: Path) -> None:
    df = _rows()
    df.to_csv(tmp_path / "manifest.csv", index=False)  # what the validate stage used to write
    assert "320.0" in (tmp_path / "manifest.csv").read_text()  # pandas' float column: the old crash
    m = read_manifest(tmp_path)
    assert m["rows"].dtype == "Int64" and m["scale"].dtype == "float64"
    assert m.loc[0, "rows"] == 320 and m.loc[0, "columns"] == 256 and m.loc[0, "pad_top"] == 12
    assert pd.isna(m.loc[1, "rows"]) and m.loc[1, "image"] == "" and m.loc[1, "sop_instance_uid"] == ""
    assert m.loc[0, "patient_id"] == "007"  # text stays text (no leading zeros lost)

    out = tmp_path / "new"
    out.mkdir()
    write_manifest(df, out)
    text = (out / "manifest.csv").read_text()
    assert "320.0" not in text and ",320,256," in text
    again = read_manifest(out / "manifest.csv")
    assert again[["path", "status", "rows", "columns"]].equals(m[["path", "status", "rows", "columns"]])


def test_valid_only_drops_every_quarantined_and_ignored_row(tmp_path: Path) -> None:
    write_manifest(_rows(), tmp_path)
    assert list(read_manifest(tmp_path)["status"]) == ["valid", "quarantined", "ignored"]
    valid = read_manifest(tmp_path, valid_only=True)
    assert list(valid["path"]) == ["A/p1/1.dcm"] and list(valid.index) == [0]


def test_a_bad_number_fails_only_in_a_valid_row(tmp_path: Path) -> None:
    df = _rows().astype(object)
    df.loc[1, "rows"] = "n/a"  # a quarantined row: nothing reads it
    df.to_csv(tmp_path / "manifest.csv", index=False)
    assert pd.isna(read_manifest(tmp_path).loc[1, "rows"])
    df.loc[0, "columns"] = "256.5"
    df.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(
        ManifestError, match=r"manifest\.csv: line 2: column columns: '256\.5' is not an integer"
    ):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda df: df.assign(status=["valid", "skipped", "quarantined"]),
            r"line 3: status 'skipped' is not one of valid, quarantined, ignored",
        ),
        (
            lambda df: df.assign(reason=["", "", "x"]),
            r"line 3: quarantined without a reason \(A/notes\.json\)",
        ),
        (
            lambda df: df.assign(status=["valid", "quarantined", "ignored"], reason=["", "x", " "]),
            r"line 4: ignored without a reason \(DICOMDIR\)",
        ),
        (lambda df: df.drop(columns=["status"]), r"not a validate-stage manifest \(no column status\)"),
    ],
    ids=["unknown status", "no reason", "ignored without a reason", "no status column"],
)
def test_contract_violations_are_one_line_errors(tmp_path: Path, edit: object, message: str) -> None:
    assert callable(edit)
    edit(_rows()).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(tmp_path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / "manifest.csv"))


def test_missing_manifest_and_its_hash(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.csv: not found"):
        read_manifest(tmp_path)
    assert manifest_sha256(tmp_path) is None
    write_manifest(_rows(), tmp_path)
    digest = manifest_sha256(tmp_path)
    assert digest is not None and len(digest) == 64 and manifest_sha256(tmp_path / "manifest.csv") == digest
