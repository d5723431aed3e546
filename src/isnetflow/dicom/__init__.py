"""DICOM input: reading (local and ``s3://``), header checks that report :class:`Issue` objects, and
pure pixel normalization (modality LUT -> robust window -> MONOCHROME1 inversion -> letterbox).

Main entry points:

* :func:`read_image` - ``(float32 [0, 1] image, bright = dense; header dict)`` for any later stage.
* :func:`analyze` - every per-file check plus the normalized image, as run by the validate stage.
* :func:`normalize_intensity`, :func:`letterbox`, :func:`unletterbox` - pure array functions.
* :mod:`isnetflow.dicom.source` - listing and fetching files from a folder or an S3 prefix.
"""

from .checks import check_pixels, check_policy, check_stored_range, check_structure, find_phi
from .ingest import Analysis, analyze, read_image
from .issues import DicomReadError, Issue, errors, first_error, warnings_of
from .normalize import (
    Letterbox,
    from_uint16,
    intensity_window,
    letterbox,
    normalize_intensity,
    normalize_letterbox,
    to_uint16,
    unletterbox,
)
from .reader import LoadedDicom, decode_pixels, header_fields, load_dicom, modality_values

__all__ = [
    "Analysis",
    "DicomReadError",
    "Issue",
    "Letterbox",
    "LoadedDicom",
    "analyze",
    "check_pixels",
    "check_policy",
    "check_stored_range",
    "check_structure",
    "decode_pixels",
    "errors",
    "find_phi",
    "first_error",
    "from_uint16",
    "header_fields",
    "intensity_window",
    "letterbox",
    "load_dicom",
    "modality_values",
    "normalize_intensity",
    "normalize_letterbox",
    "read_image",
    "to_uint16",
    "unletterbox",
    "warnings_of",
]
