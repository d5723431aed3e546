"""A location-independent fingerprint of a validated dataset.

``manifest.csv`` holds absolute paths and URIs, and the pipeline writes every run's data under a new
artifact folder, so hashing the manifest's bytes tells runs apart even when the data is the same. The
fingerprint hashes only what decides what a model learns from each file: the file's content hash, its
validation status, label, patient, site and role. Rows are sorted, so file order and location do not
matter; any changed, added or removed file, label, patient assignment or site role changes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

__all__ = ["FINGERPRINT_COLUMNS", "FINGERPRINT_VERSION", "data_fingerprint", "manifest_fingerprint"]

#: Manifest columns that enter the fingerprint, in this order.
FINGERPRINT_COLUMNS = ("sha256", "status", "label", "patient_id", "site", "role")
#: Prefix of every fingerprint, so a future change of the recipe never matches an old value.
FINGERPRINT_VERSION = "v1"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value)


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """``v1:<sha256>`` over the sorted ``(sha256, status, label, patient_id, site, role)`` rows."""
    missing = [c for c in FINGERPRINT_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks the column(s) {', '.join(missing)}")
    rows = sorted(
        json.dumps([_cell(v) for v in rec], separators=(",", ":"))
        for rec in manifest.loc[:, list(FINGERPRINT_COLUMNS)].itertuples(index=False, name=None)
    )
    digest = hashlib.sha256()
    for line in rows:
        digest.update(line.encode())
        digest.update(b"\n")
    return f"{FINGERPRINT_VERSION}:{digest.hexdigest()}"


def data_fingerprint(validated: str | Path) -> str:
    """Fingerprint of the ``manifest.csv`` in a validate-stage output folder (or of that file itself)."""
    p = Path(validated)
    if p.is_dir():
        p = p / "manifest.csv"
    try:
        manifest = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{p}: cannot read the manifest: {exc}") from exc
    try:
        return manifest_fingerprint(manifest)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from exc
