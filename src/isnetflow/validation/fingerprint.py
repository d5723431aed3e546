"""A location-independent fingerprint of a validated dataset.

``manifest.csv`` holds absolute paths and URIs, and the pipeline writes every run's data under a new
artifact folder, so hashing the manifest's bytes tells runs apart even when the data is the same. The
fingerprint hashes only what decides what a model learns from each file it trains on: the content
hash, label, patient, site and role of every *valid* row. Rows are sorted, so file order and location
do not matter; any changed, added or removed valid file, label, patient assignment or site role changes
it, and so does a file that becomes valid or quarantined. A quarantined or ignored file (a damaged DICOM;
a JSON sidecar, a README, a DICOMDIR, the labels file or a provided mask beside the images) is never
trained on, so adding or removing one leaves it unchanged: quarantined and ignored rows never affect a
later stage, scheduled retraining included.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from .manifest import ManifestError, manifest_path, read_manifest

__all__ = ["FINGERPRINT_COLUMNS", "FINGERPRINT_VERSION", "data_fingerprint", "manifest_fingerprint"]

#: Manifest columns of the valid rows that enter the fingerprint, in this order.
FINGERPRINT_COLUMNS = ("sha256", "label", "patient_id", "site", "role")
#: Prefix of every fingerprint, so a future change of the recipe never matches an old value
#: (v1 hashed the quarantined rows too, with their status).
FINGERPRINT_VERSION = "v2"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value)


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """``v2:<sha256>`` over the sorted ``(sha256, label, patient_id, site, role)`` of the valid rows."""
    missing = [c for c in ("status", *FINGERPRINT_COLUMNS) if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks the column(s) {', '.join(missing)}")
    valid = manifest.loc[manifest["status"] == "valid", list(FINGERPRINT_COLUMNS)]
    rows = sorted(
        json.dumps([_cell(v) for v in rec], separators=(",", ":"))
        for rec in valid.itertuples(index=False, name=None)
    )
    digest = hashlib.sha256()
    for line in rows:
        digest.update(line.encode())
        digest.update(b"\n")
    return f"{FINGERPRINT_VERSION}:{digest.hexdigest()}"


def data_fingerprint(validated: str | Path) -> str:
    """Fingerprint of the ``manifest.csv`` in a validate-stage output folder (or of that file itself),
    read with :func:`isnetflow.validation.manifest.read_manifest` like every later stage."""
    p = manifest_path(validated)
    try:
        manifest = read_manifest(p)
    except ManifestError as exc:
        raise ValueError(f"{p}: cannot read the manifest: {str(exc).removeprefix(f'{p}: ')}") from exc
    try:
        return manifest_fingerprint(manifest)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from exc
