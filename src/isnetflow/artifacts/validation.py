"""``validation.json`` and the data artifact's ``ingest.json``: what the validation found in a data set.

* :class:`ValidationSummary` -- ``validation.json``, written by the validation
  (:func:`isnetflow.validation.dataset.validate_tree`) beside the manifest; read back for the model
  lineage (the promote stage's ``lineage.validation_summary`` tag, the run's normalization settings);
* :class:`IngestSummary` -- ``ingest.json``, written by the ingest stage (:mod:`isnetflow.stages.ingest`)
  into the pipeline's data artifact: where the validated data and masks are, the site roles, and the
  validation summary; read by the pipeline tasks (:class:`isnetflow.tasks.DataArtifact`) and the local
  run's summary.

What stays untyped: the validation settings (``config``, as written), each expectation's result (its
keys depend on the expectation) and any key this version does not know, kept as it was read. Both files
are written as the validation always wrote them: values that are not JSON (a great-expectations result's
objects) as their ``str``, a NaN as ``NaN``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from isnetflow.artifacts import Artifact

__all__ = [
    "INGEST_FILE",
    "VALIDATION_FILE",
    "ClassBalance",
    "ExpectationResults",
    "ImagesInfo",
    "IngestSummary",
    "SiteBalance",
    "SiteSummary",
    "StatusCounts",
    "ValidationSummary",
]

#: the validation's summary, in the validated folder
VALIDATION_FILE = "validation.json"
#: the data artifact's summary, in the ingest task's output folder
INGEST_FILE = "ingest.json"


class _AsWritten(Artifact):
    """An artifact written as the validation writes its files (see the module docstring)."""

    def write(self, path: str | Path) -> Path:
        """Write the fields that were set to ``path`` (indented by 2, non-JSON values as their ``str``)."""
        p = Path(path)
        p.write_text(json.dumps(self.model_dump(exclude_unset=True), indent=2, default=str))
        return p


class StatusCounts(Artifact):
    """Files per status (``counts``)."""

    valid: int | None = None
    quarantined: int | None = None
    ignored: int | None = None


class SiteSummary(Artifact):
    """One site's files (``sites.<name>``): role, counts, patients, valid images per class, photometry."""

    role: str | list[str] | None = None
    files: int | None = None
    valid: int | None = None
    quarantined: int | None = None
    patients: int | None = None
    classes: dict[str, int] | None = None
    photometric: list[str] | None = None


class SiteBalance(Artifact):
    """One site's class balance (:func:`isnetflow.validation.balance.class_balance`)."""

    role: str | None = None
    valid: int | None = None
    classes: dict[str, int] | None = None
    fractions: dict[str, float] | None = None
    confounded: bool | None = None


class ClassBalance(Artifact):
    """``class_balance``: per site, and the sites where the site predicts the label (the confound)."""

    min_class_fraction: float | None = None
    confound: str | None = None
    sites: dict[str, SiteBalance] | None = None
    #: confounded site -> the message naming it
    confounded: dict[str, str] | None = None
    #: the one line the reports print (``None``: no confound)
    line: str | None = None


class ExpectationResults(Artifact):
    """``expectations``: the great-expectations suite's verdict, statistics and per-expectation results."""

    success: bool | None = None
    statistics: dict[str, int | float | None] | None = None
    results: list[dict[str, Any]] | None = None


class ImagesInfo(Artifact):
    """``images``: where the normalized images are, their size and file format."""

    dir: str | None = None
    size: int | None = None
    format: str | None = None


class ValidationSummary(_AsWritten):
    """``validation.json`` (fields in the order the file lists them)."""

    TITLE: ClassVar[str] = "the validation summary"

    generator: str | None = None
    input: str | None = None
    labels: str | None = None
    out: str | None = None
    files: int | None = None
    counts: StatusCounts | None = None
    #: rows left out of the pass rate (= ``counts.ignored``; kept for older readers)
    not_images: int | None = None
    pass_rate: float | None = None
    min_pass_rate: float | None = None
    #: quarantined files per reason code and per message, ignored files per rule, warnings per kind
    reasons: dict[str, int] | None = None
    reason_messages: dict[str, int] | None = None
    ignored_reasons: dict[str, int] | None = None
    warnings: dict[str, int] | None = None
    sites: dict[str, SiteSummary] | None = None
    #: ``None``: no labels, no balance
    class_balance: ClassBalance | None = None
    #: patient id -> why it leaks across roles
    patient_leakage: dict[str, str] | None = None
    expectations: ExpectationResults | None = None
    images: ImagesInfo | None = None
    passed: bool | None = None
    failure: str | None = None
    wall_seconds: float | None = None
    per_file_seconds: float | None = None
    #: the validation settings as written (untyped: see the module docstring)
    config: dict[str, Any] | None = None

    @classmethod
    def read_from(cls, validated: str | Path) -> ValidationSummary:
        """The summary in the validated folder ``validated`` (:data:`VALIDATION_FILE`)."""
        return cls.read(Path(validated) / VALIDATION_FILE)

    def count(self, status: str) -> int:
        """Files with ``status`` (valid | quarantined | ignored); 0 when not recorded."""
        value = getattr(self.counts, status, None) if self.counts is not None else None
        return int(value or 0)


class IngestSummary(_AsWritten):
    """``ingest.json`` (fields in the order the file lists them). Paths inside the artifact are relative
    to its folder (it is mounted at different places per task)."""

    TITLE: ClassVar[str] = "the pipeline artifact"

    #: the location-independent identity of the data (what scheduled retraining compares)
    data_fingerprint: str | None = None
    source: str | None = None
    labels: str | None = None
    validated: str | None = None
    provided_masks: str | None = None
    cohort_preview: str | None = None
    internal_sites: list[str] | None = None
    external_sites: list[str] | None = None
    validation: ValidationSummary | None = None
    passed: bool | None = None
    reason: str | None = None

    @classmethod
    def read_from(cls, folder: str | Path) -> IngestSummary:
        """The summary in the data artifact ``folder`` (:data:`INGEST_FILE`)."""
        return cls.read(Path(folder) / INGEST_FILE)

    def write_to(self, folder: str | Path) -> Path:
        """Write it into ``folder`` as :data:`INGEST_FILE`; returns the path."""
        return self.write(Path(folder) / INGEST_FILE)
