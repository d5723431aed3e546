"""Issue objects: what the checks report instead of raising (a quarantine reason or a warning)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CHECK_PROFILES",
    "DATASET_CODES",
    "IGNORED_CODES",
    "NOT_IMAGE_CODES",
    "REASON_CODES",
    "CheckProfile",
    "DicomReadError",
    "Issue",
    "Severity",
    "errors",
    "first_error",
    "in_profile",
    "reasons_markdown",
    "warnings_of",
]

Severity = Literal["error", "warning"]

#: Every issue code (the manifest's ``reason_code``, the counts in validation.json), in one place:
#: code -> what it means. :class:`Issue` refuses any other code.
REASON_CODES: dict[str, str] = {
    # reading the file
    "empty_file": "the file has 0 bytes",
    "too_large": "the file exceeds validate.max_file_bytes",
    "unreadable": "cannot be read or parsed (I/O error, truncated or corrupt DICOM)",
    "not_dicom": "not a DICOM file (a JSON/CSV sidecar, a README, .DS_Store, Thumbs.db, ...): ignored "
    "unless named .dcm/.dicom/.dic or listed in labels.csv, then quarantined (a damaged DICOM); a PNG/JPEG "
    "listed in labels.csv is read as a picture input instead",
    "dicomdir": "ignored: a DICOMDIR (Media Storage Directory), an index of a file set, no image",
    "no_meta_header": "warning: no Part-10 file meta header; read with an inferred transfer syntax",
    "pydicom_warning": "warning: pydicom reported a problem while reading",
    # structure: can the pixels be decoded safely?
    "no_pixel_data": "no (or empty) pixel data element",
    "malformed_attribute": "an attribute value cannot be read",
    "bad_dimensions": "missing or invalid Rows/Columns",
    "image_too_large": "declared image size above the decompression-bomb limit",
    "multi_frame": "more than one frame",
    "missing_attribute": "a required Image Pixel attribute is missing",
    "not_grayscale": "SamplesPerPixel is not 1",
    "colour_image": "a PNG/JPEG whose colour channels differ (coloured arrows, annotations or a tint on the "
    "radiograph), not a gray image stored as colour",
    "photometric": "photometric interpretation missing or not accepted",
    "bits": "implausible BitsAllocated/BitsStored/PixelRepresentation",
    "high_bit": "warning: HighBit inconsistent with BitsStored",
    "pixel_data_truncated": "pixel data shorter than the header declares",
    "pixel_data_length": "warning: pixel data longer than the header declares",
    "transfer_syntax": "transfer syntax missing, malformed or without a decoder",
    # policy: is this an image the project accepts?
    "modality": "Modality missing or not accepted",
    "no_view_position": "warning: no ViewPosition, frontal view not verified",
    "view": "not a frontal view",
    "missing_identifier": "a required identifier (SOPInstanceUID, PatientID, ...) is missing",
    "malformed_uid": "a UID breaks the DICOM UID syntax",
    "no_site": "no InstitutionName and no site in labels.csv",
    "phi": "a PHI attribute holds a value (not de-identified)",
    "burned_in": "BurnedInAnnotation=YES",
    # pixels
    "bits_exceeded": "stored values do not fit in BitsStored",
    "non_finite": "NaN or infinite pixel values",
    "constant_image": "every pixel has the same value",
    "low_contrast": "near-constant image",
    "decode_failed": "the pixel data could not be decoded",
    # the validate stage
    "write_failed": "the normalized image could not be written",
    "worker_crashed": "the worker process checking the file died (twice: once alone), e.g. a decoder crash",
    "no_label": "not listed in labels.csv",
    "missing_file": "listed in labels.csv but not found",
    "duplicate_uid": "SOPInstanceUID seen in an earlier file",
    "duplicate": "the same radiograph (pixel-identical, or near-identical by perceptual hash) as a kept file "
    "of another patient, another site or the other internal/external set; the reason names the kept file",
    "duplicate_same_patient": "the same radiograph as a kept file of the same patient and site: kept once "
    "(the first by path), the reason names it",
    "patient_leakage": "a patient in two sites, or in both internal and external sets",
    # ignored: found in the input tree, but not an input image (status ``ignored``, see IGNORED_CODES)
    "excluded": "ignored: a path component matches a validate.exclude pattern (hidden folders by default)",
    "labels_file": "ignored: the labels CSV itself, inside the input tree",
    "provided_mask": "ignored: a provided lung mask (the masks/ folder beside the labels file)",
    "own_output": "ignored: a file of the validate stage's own output folder, inside the input tree",
}


#: Codes of files that are not images at all (stray files beside the DICOMs). Such a file is
#: ``ignored`` unless it claims to be DICOM (named ``*.dcm``/``.dicom``/``.dic`` or listed in
#: labels.csv): a damaged DICOM stays ``quarantined`` as ``not_dicom``. A DICOMDIR is always ignored.
NOT_IMAGE_CODES = frozenset({"not_dicom", "dicomdir"})

#: The rules that make a manifest row ``ignored`` (a file found in the input tree that is not an input
#: image): listed with the rule as ``reason_code``, never counted in the pass rate, never used later.
IGNORED_CODES = frozenset({"excluded", "labels_file", "provided_mask", "own_output", *NOT_IMAGE_CODES})


#: Codes of the checks that concern the data set, not the image itself: where the image is from and who
#: it shows (required identifiers, UID syntax, site), de-identification, and the stage's set-level
#: decisions (labels, duplicates, leakage, the ignore rules). Every other code concerns the image:
#: can it be read and decoded, is it a grayscale radiograph of an accepted modality, frontal where the
#: header says so, with usable pixel values.
DATASET_CODES = frozenset(
    {
        "missing_identifier",
        "malformed_uid",
        "no_site",
        "phi",
        "no_label",
        "missing_file",
        "duplicate_uid",
        "duplicate",
        "duplicate_same_patient",
        "patient_leakage",
        *(IGNORED_CODES - NOT_IMAGE_CODES),
    }
)

#: Who applies the checks: ``validate`` (the validate stage, building a training set) or ``explain``
#: (``isnetflow explain`` and serving: one image to score).
CheckProfile = Literal["validate", "explain"]

#: The codes each use applies: the validate stage every one; explain and serving only the image's
#: (:data:`DATASET_CODES` are left out: no site, patient id or PHI check; a non-image is still refused).
CHECK_PROFILES: dict[CheckProfile, frozenset[str]] = {
    "validate": frozenset(REASON_CODES),
    "explain": frozenset(REASON_CODES) - DATASET_CODES,
}


def in_profile(issues: Iterable[Issue], profile: CheckProfile) -> list[Issue]:
    """The issues whose check ``profile`` applies (see :data:`CHECK_PROFILES`), in order."""
    codes = CHECK_PROFILES[profile]
    return [i for i in issues if i.code in codes]


def reasons_markdown() -> str:
    """The catalogue as the table of docs/usage.md: code, what the file becomes, meaning.

    docs/usage.md holds this output between ``<!-- reason-codes -->`` markers and a test compares the two,
    so a code added here without that table (or the other way round) fails the suite.
    """
    lines = ["| `reason_code` | the file is | meaning |", "|---|---|---|"]
    for code, meaning in REASON_CODES.items():
        if code in IGNORED_CODES:
            status = "ignored (quarantined if it claims to be DICOM)" if code == "not_dicom" else "ignored"
        elif meaning.startswith("warning: "):
            status = "kept, with a warning"
        else:
            status = "quarantined"
        text = meaning.removeprefix("warning: ").removeprefix("ignored: ")
        lines.append(f"| `{code}` | {status} | {text} |")
    return "\n".join(lines)


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

    def __post_init__(self) -> None:
        """Refuse a ``code`` that is not in :data:`REASON_CODES`."""
        if self.code not in REASON_CODES:
            raise ValueError(
                f"unknown issue code {self.code!r}: add it to isnetflow.dicom.issues.REASON_CODES"
            )

    @property
    def is_error(self) -> bool:
        """True for an error (the file is quarantined), False for a warning."""
        return self.severity == "error"

    def __str__(self) -> str:
        """The message."""
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
        """``issue``: why; ``source``: the file, prefixed to the message when given."""
        self.issue = issue
        self.source = source
        super().__init__(f"{source}: {issue.message}" if source else issue.message)
