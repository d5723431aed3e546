"""Issue objects: what the checks report instead of raising (a quarantine reason or a warning)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["DicomReadError", "Issue", "Severity", "errors", "first_error", "warnings_of"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One finding about one file.

    ``code`` is stable and machine-readable (used for counts, e.g. ``"not_dicom"``); ``message`` is a
    one-line human phrase naming the problem (e.g. ``"modality MR not in CR, DX"``). An ``"error"``
    quarantines the file; a ``"warning"`` is recorded in the manifest and keeps it.
    """

    code: str
    message: str
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return self.message


def errors(issues: Iterable[Issue]) -> list[Issue]:
    """The errors among ``issues``, in order."""
    return [i for i in issues if i.is_error]


def warnings_of(issues: Iterable[Issue]) -> list[Issue]:
    """The warnings among ``issues``, in order."""
    return [i for i in issues if not i.is_error]


def first_error(issues: Iterable[Issue]) -> Issue | None:
    """The primary quarantine reason (checks run from the most to the least fundamental)."""
    return next((i for i in issues if i.is_error), None)


class DicomReadError(Exception):
    """A file that cannot be read as a DICOM image; carries the :class:`Issue` that says why."""

    def __init__(self, issue: Issue, source: str | None = None) -> None:
        self.issue = issue
        self.source = source
        super().__init__(f"{source}: {issue.message}" if source else issue.message)
