"""Reading DICOM files robustly: bytes -> dataset -> header dict -> stored pixels -> modality values.

:func:`read_image` is the one-call entry point for later stages (masks, evaluation)::

    image, header = read_image("scan.dcm")          # float32 [0, 1], bright = dense, full resolution
    image, header = read_image(data, size=256)      # letterboxed to 256 x 256; header["letterbox"]

Files without a Part-10 meta header (no preamble / ``DICM`` prefix, no TransferSyntaxUID) but with a
valid dataset are read with ``force=True``; the transfer syntax is inferred from the dataset encoding
pydicom detected (e.g. Implicit VR Little Endian) and a warning is recorded.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .issues import DicomReadError, Issue

__all__ = [
    "LoadedDicom",
    "decode_pixels",
    "header_fields",
    "load_dicom",
    "modality_values",
    "short_error",
]

#: Tags whose presence makes a meta-less byte stream plausibly a DICOM dataset.
_DATASET_MARKERS = (
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080060,  # Modality
    0x00280010,  # Rows
    0x7FE00010,  # PixelData
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_STR_FIELDS = {
    "sop_instance_uid": "SOPInstanceUID",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "patient_id": "PatientID",
    "institution_name": "InstitutionName",
    "modality": "Modality",
    "view_position": "ViewPosition",
    "photometric_interpretation": "PhotometricInterpretation",
    "burned_in_annotation": "BurnedInAnnotation",
    "patient_identity_removed": "PatientIdentityRemoved",
    "body_part_examined": "BodyPartExamined",
    "manufacturer": "Manufacturer",
}
_INT_FIELDS = {
    "rows": "Rows",
    "columns": "Columns",
    "samples_per_pixel": "SamplesPerPixel",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "high_bit": "HighBit",
    "pixel_representation": "PixelRepresentation",
    "number_of_frames": "NumberOfFrames",
}
_FLOAT_FIELDS = {
    "rescale_slope": "RescaleSlope",
    "rescale_intercept": "RescaleIntercept",
    "window_center": "WindowCenter",
    "window_width": "WindowWidth",
}


def short_error(exc: BaseException, limit: int = 160) -> str:
    """``"TypeName: first line of the message"``, truncated: for quarantine reasons, never a traceback."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class LoadedDicom:
    """A parsed dataset plus what was noticed while reading it."""

    dataset: Dataset
    warnings: list[Issue] = field(default_factory=list)
    n_bytes: int = 0
    has_meta: bool = True


def _record_warnings(caught: list[warnings.WarningMessage], limit: int = 3) -> list[Issue]:
    seen: list[str] = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0][:140] if str(w.message).strip() else ""
        if text and text not in seen:
            seen.append(text)
    return [Issue("pydicom_warning", f"pydicom: {t}", "warning") for t in seen[:limit]]


def _infer_transfer_syntax(ds: Dataset) -> str:
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True  # pydicom could not tell: the classic ACR-NEMA default
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def load_dicom(source: bytes | str | os.PathLike[str], *, max_bytes: int | None = None) -> LoadedDicom:
    """Parse a DICOM file from bytes, a local path or an ``s3://`` URI.

    Raises :class:`DicomReadError` (never anything else for bad content) with issue codes
    ``empty_file``, ``too_large``, ``not_dicom``, ``unreadable`` (truncated or corrupt header).
    """
    name: str | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        from .source import SourceError, read_bytes, resolve

        name = str(source)
        try:
            data = read_bytes(resolve(source), max_bytes=max_bytes)
        except SourceError as exc:
            code = "too_large" if "too large" in str(exc) else "unreadable"
            raise DicomReadError(Issue(code, str(exc).split(": ", 1)[-1]), name) from exc
    if not data:
        raise DicomReadError(Issue("empty_file", "empty file (0 bytes)"), name)
    if max_bytes is not None and len(data) > max_bytes:
        raise DicomReadError(
            Issue("too_large", f"file too large ({len(data)} bytes > limit {max_bytes})"), name
        )
    part10 = len(data) >= 132 and data[128:132] == b"DICM"
    issues: list[Issue] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=not part10)
        except InvalidDicomError as exc:
            raise DicomReadError(Issue("not_dicom", f"not a DICOM file ({short_error(exc)})"), name) from exc
        except Exception as exc:
            raise DicomReadError(
                Issue("unreadable", f"unreadable DICOM (truncated or corrupt): {short_error(exc)}"), name
            ) from exc
    issues += _record_warnings(caught)
    try:
        looks_like_dicom = any(tag in ds for tag in _DATASET_MARKERS)
    except Exception:
        looks_like_dicom = False
    if not looks_like_dicom and not part10:
        raise DicomReadError(
            Issue("not_dicom", "not a DICOM file (no DICM prefix and no DICOM image attributes)"), name
        )
    if not looks_like_dicom:
        raise DicomReadError(
            Issue(
                "unreadable", "unreadable DICOM: no image attributes after the file meta header (truncated?)"
            ),
            name,
        )
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        ts = _infer_transfer_syntax(ds)
        meta.TransferSyntaxUID = ts
        what = "no DICOM file meta header" if not part10 else "no TransferSyntaxUID in the meta header"
        issues.append(
            Issue(
                "no_meta_header",
                f"{what}: read with force=True as {pydicom.uid.UID(ts).name}",
                "warning",
            )
        )
    return LoadedDicom(ds, issues, len(data), has_meta=part10)


@functools.cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword}")
    return tag


def _element(ds: Dataset, keyword: str) -> Any:
    """The data element for ``keyword`` or None when absent (conversion errors propagate)."""
    tag = _tag(keyword)
    return ds[tag] if tag in ds._dict else None


def _value(ds: Dataset, keyword: str, malformed: list[str]) -> Any:
    try:
        elem = _element(ds, keyword)
        return None if elem is None else elem.value
    except Exception:
        malformed.append(keyword)
        return None


def _first(v: Any) -> Any:
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return v[0] if len(v) else None
    return v


def _as_str(v: Any) -> str | None:
    v = _first(v)
    if v is None:
        return None
    s = str(v).strip().strip("\x00").strip()
    return s or None


def _as_int(v: Any, keyword: str, malformed: list[str]) -> int | None:
    v = _first(v)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        malformed.append(keyword)
        return None


def _as_float(v: Any, keyword: str, malformed: list[str]) -> float | None:
    v = _first(v)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        malformed.append(keyword)
        return None


def header_fields(ds: Dataset) -> dict[str, Any]:
    """The header attributes the checks and the manifest need, as plain Python values.

    Never raises: unreadable values become ``None`` and their keywords are listed under
    ``"malformed_attributes"``. PHI attributes are deliberately *not* included (the dict goes into the
    manifest); see :func:`isnetflow.dicom.checks.find_phi`.
    """
    malformed: list[str] = []
    out: dict[str, Any] = {}
    for key, kw in _STR_FIELDS.items():
        out[key] = _as_str(_value(ds, kw, malformed))
    for key, kw in _INT_FIELDS.items():
        out[key] = _as_int(_value(ds, kw, malformed), kw, malformed)
    for key, kw in _FLOAT_FIELDS.items():
        out[key] = _as_float(_value(ds, kw, malformed), kw, malformed)
    spacing = _value(ds, "PixelSpacing", malformed) or _value(ds, "ImagerPixelSpacing", malformed)
    out["pixel_spacing"] = None
    out["pixel_spacing_columns"] = None
    try:
        if spacing is not None and len(spacing) == 2:
            out["pixel_spacing"], out["pixel_spacing_columns"] = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError):
        malformed.append("PixelSpacing")
    meta = getattr(ds, "file_meta", None)
    ts = _value(meta, "TransferSyntaxUID", malformed) if meta is not None else None
    out["transfer_syntax_uid"] = _as_str(ts)
    pixel_kw = next((kw for kw in _PIXEL_KEYWORDS if kw in ds), None)
    out["pixel_data_element"] = pixel_kw
    out["pixel_data_bytes"] = None
    if pixel_kw is not None:
        raw = _value(ds, pixel_kw, malformed)
        out["pixel_data_bytes"] = (
            len(raw) if isinstance(raw, bytes | bytearray) else 0 if raw is None else None
        )
    try:
        out["has_modality_lut_sequence"] = "ModalityLUTSequence" in ds
    except Exception:
        out["has_modality_lut_sequence"] = False
    out["malformed_attributes"] = sorted(set(malformed))
    return out


def decode_pixels(ds: Dataset) -> np.ndarray:
    """Stored pixel values of the (first) frame as a 2-D array (pydicom's decoders; may raise)."""
    arr = np.asarray(ds.pixel_array)
    if arr.ndim == 3 and arr.shape[0] >= 1 and int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a single grayscale frame, decoded shape {arr.shape}")
    return arr


def modality_values(ds: Dataset, raw: np.ndarray, fields: dict[str, Any] | None = None) -> np.ndarray:
    """Apply the modality LUT: a Modality LUT Sequence via pydicom, else RescaleSlope/Intercept.

    Returns float32 values in modality units (for CR/DX usually unitless "US" detector values).
    """
    f = fields if fields is not None else header_fields(ds)
    if f.get("has_modality_lut_sequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    slope = f.get("rescale_slope")
    intercept = f.get("rescale_intercept")
    values = raw.astype(np.float32)
    if slope is not None and slope != 1.0:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values
