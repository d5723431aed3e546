"""``splits.csv``: the training run's patient split, stored as an artifact beside the model.

The train stage computes the split with :func:`isnetflow.training.splits.assign_splits` and writes it
here; the evaluate stage reads it back, so the internal test split is the list of patients the training
run held out, not a recomputation. This module is the file's one reader and writer.

Format: UTF-8 CSV, header ``patient_id,site,split``, one row per (internal patient, site) pair, sorted by
patient id then site, ``\\n`` line ends; ``split`` is ``train``, ``val`` or ``test`` and is the same on
every row of a patient. External sites are not listed: their images are never trained on, and the
evaluation data's site roles say which they are. The file's identity is the SHA-256 of its bytes
(:func:`digest`), recorded in ``train_summary.json`` (``splits_sha256``), as the MLflow run parameter
``data.splits_sha256`` and in the registered package's metadata; :func:`parse_splits` refuses content
whose digest differs.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HELD_OUT_SPLITS",
    "SPLITS_FILE",
    "SplitFileError",
    "SplitRow",
    "StoredSplit",
    "digest",
    "held_out_rows",
    "parse_splits",
    "read_splits",
    "render_splits",
    "split_of_patient",
    "write_splits",
]

SPLITS_FILE = "splits.csv"
#: the splits a row may name (internal patients only)
HELD_OUT_SPLITS = ("train", "val", "test")
_COLUMNS = ("patient_id", "site", "split")


class SplitFileError(ValueError):
    """A ``splits.csv`` cannot be used (message names the file and the problem, on one line)."""


@dataclass(frozen=True, order=True)
class SplitRow:
    """One internal patient at one site, and the split training put the patient in."""

    patient_id: str
    site: str
    split: str

    def __post_init__(self) -> None:
        """Refuse an unknown split name or an empty patient id."""
        if self.split not in HELD_OUT_SPLITS:
            raise ValueError(f"split must be one of {HELD_OUT_SPLITS}, got {self.split!r}")
        if not self.patient_id:
            raise ValueError("empty patient_id")


@dataclass(frozen=True)
class StoredSplit:
    """A written ``splits.csv``: where it is and the SHA-256 of its bytes."""

    path: Path
    sha256: str


def held_out_rows(patient_ids: Sequence[str], sites: Sequence[str], splits: Sequence[str]) -> list[SplitRow]:
    """The rows of a per-image split assignment (``TrainData.patient_ids/sites/splits``): one per internal
    (patient, site) pair, sorted; external images are left out."""
    rows = {
        SplitRow(str(p), str(s), sp)
        for p, s, sp in zip(patient_ids, sites, splits, strict=True)
        if sp != "external"
    }
    return sorted(rows)


def split_of_patient(rows: Iterable[SplitRow]) -> dict[str, str]:
    """``{patient_id: split}``; a patient listed in two splits is an error."""
    out: dict[str, str] = {}
    for r in rows:
        if out.setdefault(r.patient_id, r.split) != r.split:
            raise ValueError(f"patient {r.patient_id!r} is listed in {out[r.patient_id]} and {r.split}")
    return out


def digest(content: bytes) -> str:
    """SHA-256 (hex) of a ``splits.csv``'s bytes."""
    return hashlib.sha256(content).hexdigest()


def render_splits(rows: Iterable[SplitRow]) -> bytes:
    """The file's bytes (deterministic: sorted rows, ``\\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_COLUMNS)
    for r in sorted(rows):
        w.writerow((r.patient_id, r.site, r.split))
    return buf.getvalue().encode("utf-8")


def write_splits(rows: Iterable[SplitRow], folder: str | Path) -> StoredSplit:
    """Write ``folder/splits.csv``; returns its path and digest."""
    rows = list(rows)
    split_of_patient(rows)  # one split per patient, or refuse to write
    content = render_splits(rows)
    path = Path(folder) / SPLITS_FILE
    path.write_bytes(content)
    return StoredSplit(path, digest(content))


def parse_splits(content: bytes, *, expected_sha256: str, source: str) -> list[SplitRow]:
    """The rows of a ``splits.csv`` whose bytes hash to ``expected_sha256``; ``source`` names the file in
    errors (a path or an MLflow location)."""
    got = digest(content)
    if got != expected_sha256:
        raise SplitFileError(
            f"{source}: SHA-256 {got[:12]}... does not match the training run's {expected_sha256[:12]}...: "
            "the held-out patient list was changed or replaced"
        )
    try:
        reader = csv.reader(io.StringIO(content.decode("utf-8")))
        header = next(reader, None)
        if tuple(header or ()) != _COLUMNS:
            raise ValueError(f"header {header} is not {list(_COLUMNS)}")
        rows = [SplitRow(*line) for line in reader if line]
        split_of_patient(rows)
    except (UnicodeDecodeError, TypeError, ValueError) as exc:
        raise SplitFileError(f"{source}: not a held-out patient list: {exc}") from exc
    return rows


def read_splits(path: str | Path, *, expected_sha256: str) -> list[SplitRow]:
    """:func:`parse_splits` of the file at ``path``."""
    p = Path(path)
    try:
        content = p.read_bytes()
    except OSError as exc:
        raise SplitFileError(f"{p}: cannot read the held-out patient list: {exc}") from exc
    return parse_splits(content, expected_sha256=expected_sha256, source=str(p))
