"""Dataset-level validation: the labels.csv contract, the manifest reader/writer (the one way any stage
reads ``manifest.csv``), the data fingerprint and the great-expectations suite.

``great_expectations`` is imported lazily (inside :func:`run_suite`), so importing this package is cheap.
"""

from .fingerprint import data_fingerprint, manifest_fingerprint
from .labels import LABEL_COLUMNS, LabelsError, parse_labels
from .manifest import MANIFEST_COLUMNS, ManifestError, manifest_sha256, read_manifest, valid_rows
from .suite import KEY_COLUMNS, SuiteOutcome, dataset_columns, leaking_patients, run_suite

__all__ = [
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "MANIFEST_COLUMNS",
    "LabelsError",
    "ManifestError",
    "SuiteOutcome",
    "data_fingerprint",
    "dataset_columns",
    "leaking_patients",
    "manifest_fingerprint",
    "manifest_sha256",
    "parse_labels",
    "read_manifest",
    "run_suite",
    "valid_rows",
]
