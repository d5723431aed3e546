"""Dataset-level validation of the manifest: the labels.csv contract and the great-expectations suite.

``great_expectations`` is imported lazily (inside :func:`run_suite`), so importing this package is cheap.
"""

from .fingerprint import data_fingerprint, manifest_fingerprint
from .labels import LABEL_COLUMNS, LabelsError, parse_labels
from .suite import KEY_COLUMNS, SuiteOutcome, dataset_columns, leaking_patients, run_suite

__all__ = [
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "LabelsError",
    "SuiteOutcome",
    "data_fingerprint",
    "dataset_columns",
    "leaking_patients",
    "manifest_fingerprint",
    "parse_labels",
    "run_suite",
]
