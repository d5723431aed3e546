"""The ``labels.csv`` contract: ``path,label[,patient_id][,site][,mask][,role]``.

Paths (and masks) are relative to the CSV's folder. ``patient_id`` / ``site`` override the DICOM
PatientID / InstitutionName; ``role`` (``internal`` | ``external``) overrides the configured site roles.
Any other column layout, an unreadable file or a path listed twice is a :class:`LabelsError` whose
one-line message starts with the file name.
"""

from __future__ import annotations

import csv
import io

import pandas as pd

__all__ = ["LABEL_COLUMNS", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "LabelsError", "parse_labels"]

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("patient_id", "site", "mask", "role")
LABEL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
_LAYOUT = "path,label[,patient_id][,site][,mask][,role]"


class LabelsError(ValueError):
    """The labels file is unreadable or breaks the contract (one line, names the file)."""


def parse_labels(data: bytes | str, name: str) -> pd.DataFrame:
    """Parse labels CSV content into a DataFrame with all of :data:`LABEL_COLUMNS` (missing -> None).

    Values are stripped; empty cells become None. ``name`` is used in error messages.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise LabelsError(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        raise LabelsError(f"{name}: empty file, expected a header row {_LAYOUT}")
    try:
        header = next(csv.reader(io.StringIO(text)))
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, csv.Error, ValueError, StopIteration) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabelsError(f"{name}: unreadable CSV ({first})") from exc
    cols = [str(c).strip().lower() for c in header]
    if len(set(cols)) != len(cols):
        raise LabelsError(f"{name}: duplicate column names {','.join(cols)}; expected {_LAYOUT}")
    unknown = [c for c in cols if c not in LABEL_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if unknown or missing:
        problem = []
        if missing:
            problem.append(f"missing {', '.join(missing)}")
        if unknown:
            problem.append(f"unknown {', '.join(repr(c) for c in unknown)}")
        raise LabelsError(
            f"{name}: unknown column layout {','.join(cols)} ({'; '.join(problem)}); expected {_LAYOUT}"
        )
    df.columns = pd.Index(cols)
    out = pd.DataFrame(
        {c: (df[c] if c in df else pd.Series([""] * len(df), dtype=str)) for c in LABEL_COLUMNS}
    )
    out = out.apply(lambda s: s.str.strip()).astype(object)
    out = out.where(out != "", None)
    empty = out.index[out["path"].isna()]
    if len(empty):
        raise LabelsError(f"{name}: empty path on line {int(empty[0]) + 2}")
    dup = out["path"].duplicated(keep=False)
    if dup.any():
        first = out.loc[dup, "path"].iloc[0]
        lines = [int(i) + 2 for i in out.index[out["path"] == first]]
        raise LabelsError(
            f"{name}: path {first!r} listed more than once (lines {', '.join(map(str, lines))})"
        )
    bad_role = out["role"].notna() & ~out["role"].isin(["internal", "external"])
    if bad_role.any():
        i = int(out.index[bad_role][0])
        raise LabelsError(f"{name}: line {i + 2}: role {out.at[i, 'role']!r} is not 'internal' or 'external'")
    return out.reset_index(drop=True)
