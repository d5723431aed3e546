"""The labels.csv contract: accepted layouts, and one-line errors naming the file for everything else."""

from __future__ import annotations

import pytest

from isnetflow.validation import LABEL_COLUMNS, LabelsError, parse_labels


def test_minimal_and_full_layouts() -> None:
    df = parse_labels(b"path,label\na/1.dcm,normal\nb/2.dcm, covid \n", "labels.csv")
    assert list(df.columns) == list(LABEL_COLUMNS)
    assert df["path"].tolist() == ["a/1.dcm", "b/2.dcm"]
    assert df["label"].tolist() == ["normal", "covid"]  # stripped
    assert df["patient_id"].isna().all() and df["site"].isna().all() and df["mask"].isna().all()

    full = parse_labels(
        "\ufeffPath,Label,patient_id,site,mask,role\nx.dcm,normal,P1,,m/x.png,external\n",
        "l.csv",
    )
    row = full.iloc[0].to_dict()
    assert row == {
        "path": "x.dcm",
        "label": "normal",
        "patient_id": "P1",
        "site": None,  # empty cell -> falls back to InstitutionName
        "mask": "m/x.png",
        "role": "external",
    }


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty file"),
        (
            b"path,diagnosis\na.dcm,normal\n",
            "unknown column layout path,diagnosis (missing label; unknown 'diagnosis')",
        ),
        (b"file,label\na.dcm,normal\n", "missing path"),
        (b"path,label,notes\na.dcm,normal,x\n", "unknown 'notes'"),
        (b"path,label,label\na.dcm,normal,x\n", "duplicate column names"),
        (b"path,label\na.dcm,normal\na.dcm,covid\n", "'a.dcm' listed more than once (lines 2, 3)"),
        (b"path,label\n,normal\n", "empty path on line 2"),
        (b"path,label,role\na.dcm,normal,training\n", "line 2: role 'training'"),
        (b"path,label\n\xff\xfe\x00a", "not UTF-8"),
        (b'path,label\n"a.dcm,normal\n', "unreadable CSV"),
    ],
    ids=[
        "empty",
        "no label",
        "no path",
        "extra column",
        "dup column",
        "dup path",
        "empty path",
        "role",
        "binary",
        "quote",
    ],
)
def test_bad_files_fail_with_one_line_naming_the_file(content: bytes, needle: str) -> None:
    with pytest.raises(LabelsError) as info:
        parse_labels(content, "/data/site-a/labels.csv")
    msg = str(info.value)
    assert msg.startswith("/data/site-a/labels.csv: ")
    assert needle in msg
    assert "\n" not in msg
