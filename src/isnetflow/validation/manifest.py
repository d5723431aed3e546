"""``manifest.csv``: the validate stage's one row per input file, written and read with explicit types.

Every later stage (masks, train, evaluate, promote, the retraining fingerprint) reads the manifest
through :func:`read_manifest`, never with a bare ``pd.read_csv``. Left to itself pandas infers each
column's type from its cells: a non-DICOM file beside the images (a JSON sidecar, a ``README``, a
``DICOMDIR``) is quarantined with empty ``rows``/``columns``, the integer columns then hold floats, and
``320`` comes back as ``'320.0'``. Here:

* text columns are ``str`` with ``""`` for an empty cell (never NaN);
* integer columns are pandas ``Int64`` (``<NA>`` when empty), and ``320.0`` written by an older
  manifest still reads as ``320``;
* float columns are ``float64`` (NaN when empty);
* ``status`` is ``valid``, ``quarantined`` (an input image that failed a check) or ``ignored`` (a file
  found beside the inputs that is not an input image: ``reason_code`` names the rule, one of
  :data:`isnetflow.dicom.issues.IGNORED_CODES`); a quarantined or ignored row has a reason (the
  contract).

Quarantined and ignored rows never constrain what a later stage gets: an unparseable number in such a
row reads as missing instead of failing the stage. The same number in a valid row is a
:class:`ManifestError` naming the file, the line and the column.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "FLOAT_COLUMNS",
    "HEADER_COLUMNS",
    "INT_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "STATUSES",
    "ManifestError",
    "manifest_path",
    "manifest_sha256",
    "read_manifest",
    "typed_manifest",
    "valid_rows",
    "with_integer_columns",
    "write_manifest",
]

MANIFEST_FILE = "manifest.csv"
STATUSES = ("valid", "quarantined", "ignored")

#: Header fields copied from each file's DICOM analysis into its manifest row.
HEADER_COLUMNS = [
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "view_position",
    "photometric_interpretation",
    "bits_allocated",
    "bits_stored",
    "pixel_representation",
    "rows",
    "columns",
    "pixel_spacing",
    "pixel_spacing_columns",
    "transfer_syntax_uid",
    "rescale_slope",
    "rescale_intercept",
    "window_center",
    "window_width",
    "burned_in_annotation",
]

#: Every column, in file order.
MANIFEST_COLUMNS = [
    "path",
    "status",
    "reason",
    "reason_code",
    "warnings",
    "label",
    "patient_id",
    "site",
    "role",
    *HEADER_COLUMNS[:-1],
    "window_low",  # the intensity window actually applied (percentile or DICOM)
    "window_high",
    HEADER_COLUMNS[-1],
    "sha256",
    "file_bytes",
    "image",
    "image_size",
    "pad_top",
    "pad_bottom",
    "pad_left",
    "pad_right",
    "scale",
    "mask",
    "uri",
    "issues",
]
INT_COLUMNS = (
    "bits_allocated",
    "bits_stored",
    "pixel_representation",
    "rows",
    "columns",
    "file_bytes",
    "image_size",
    "pad_top",
    "pad_bottom",
    "pad_left",
    "pad_right",
)
FLOAT_COLUMNS = (
    "pixel_spacing",
    "pixel_spacing_columns",
    "rescale_slope",
    "rescale_intercept",
    "window_center",
    "window_width",
    "window_low",
    "window_high",
    "scale",
)
_REQUIRED = ("path", "status", "reason")


class ManifestError(ValueError):
    """``manifest.csv`` is missing, unreadable or breaks the contract (one line, names the file)."""


def manifest_path(validated: str | os.PathLike[str]) -> Path:
    """The manifest of a validate-stage output folder (or ``validated`` itself when it is the file)."""
    p = Path(validated)
    return p if p.suffix == ".csv" and not p.is_dir() else p / MANIFEST_FILE


def manifest_sha256(validated: str | os.PathLike[str]) -> str | None:
    """sha256 of the manifest file's bytes (identity of the exact file); None when it does not exist."""
    p = manifest_path(validated)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _text(series: pd.Series) -> list[str]:
    return ["" if _is_missing(v) else str(v) for v in series]


def _convert(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Typed copy of a manifest table whose cells are strings, numbers or None (see the module doc)."""
    out = df.copy()
    valid = (out["status"] == "valid").to_numpy() if "status" in out else np.ones(len(out), dtype=bool)
    for col in out.columns:
        if col not in INT_COLUMNS and col not in FLOAT_COLUMNS:
            out[col] = pd.Series(_text(out[col]), index=out.index, dtype=object)
            continue
        text = pd.Series(_text(out[col]), index=out.index, dtype=object).str.strip()
        present = (text != "").to_numpy()
        num = pd.to_numeric(text.where(text != "", None), errors="coerce").to_numpy(
            dtype="float64", copy=True
        )
        bad = present & ~np.isfinite(num) & (text.str.lower() != "nan").to_numpy()
        is_int = col in INT_COLUMNS
        if is_int:
            bad |= present & np.isfinite(num) & (num != np.round(num))
        if (bad & valid).any():
            i = int(np.flatnonzero(bad & valid)[0])
            kind = "an integer" if is_int else "a number"
            raise ManifestError(f"{name}: line {i + 2}: column {col}: {text.iloc[i]!r} is not {kind}")
        num[bad] = np.nan  # a quarantined row: its numbers are not used by anything
        if is_int:
            ints = pd.array(np.where(np.isfinite(num), num, 0).astype("int64"), dtype="Int64")
            ints[~np.isfinite(num)] = pd.NA
            out[col] = ints
        else:
            out[col] = num
    return out


def typed_manifest(manifest: pd.DataFrame, name: str = MANIFEST_FILE) -> pd.DataFrame:
    """The manifest with the column types :func:`read_manifest` returns (for in-memory tables)."""
    return _convert(manifest, name)


def with_integer_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """A copy whose integer columns are pandas ``Int64``: ``320`` stays ``320`` (not ``320.0``) when
    quarantined rows leave the column partly empty."""
    df = manifest.copy()
    for col in INT_COLUMNS:
        if col in df:
            df[col] = pd.array([None if _is_missing(v) else int(v) for v in df[col]], dtype="Int64")
    return df


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest`` to ``path`` (a folder or the CSV), integers as integers."""
    p = manifest_path(path)
    with_integer_columns(manifest).to_csv(p, index=False)
    return p


def read_manifest(validated: str | os.PathLike[str], *, valid_only: bool = False) -> pd.DataFrame:
    """Read ``manifest.csv`` from a validate-stage output folder (or the file itself), typed.

    ``valid_only`` keeps the valid rows (index reset): what every stage after validation works on.
    Raises :class:`ManifestError` for a missing or unreadable file, a missing required column, an
    unknown status, a quarantined or ignored row without a reason, or a malformed number in a valid row.
    """
    p = manifest_path(validated)
    if not p.is_file():
        raise ManifestError(f"{p}: not found (run `isnetflow validate` first)")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(f"{p}: cannot read the manifest ({first})") from exc
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise ManifestError(f"{p}: not a validate-stage manifest (no column {', '.join(missing)})")
    bad = ~raw["status"].isin(STATUSES)
    if bad.any():
        i = int(raw.index[bad][0])
        raise ManifestError(
            f"{p}: line {i + 2}: status {raw.at[i, 'status']!r} is not one of {', '.join(STATUSES)}"
        )
    unexplained = (raw["status"] != "valid") & (raw["reason"].str.strip() == "")
    if unexplained.any():
        i = int(raw.index[unexplained][0])
        raise ManifestError(
            f"{p}: line {i + 2}: {raw.at[i, 'status']!s} without a reason ({raw.at[i, 'path']!s})"
        )
    df = _convert(raw, str(p))
    return valid_rows(df) if valid_only else df


def valid_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The valid rows of a manifest, index reset (quarantined and ignored rows never reach a later stage)."""
    return manifest[manifest["status"] == "valid"].reset_index(drop=True)
