"""Dataset-level validation of the manifest: the labels.csv contract and the great-expectations suite.

``great_expectations`` is imported lazily (inside :func:`run_suite`), so importing this package is cheap.
"""

from .labels import LABEL_COLUMNS, LabelsError, parse_labels
from .suite import KEY_COLUMNS, SuiteOutcome, dataset_columns, leaking_patients, run_suite

__all__ = [
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "LabelsError",
    "SuiteOutcome",
    "dataset_columns",
    "leaking_patients",
    "parse_labels",
    "run_suite",
]
