"""Reading DICOM files robustly: bytes -> dataset -> header dict -> stored pixels -> modality values.

:func:`read_image` is the one-call entry point for later stages (masks, evaluation)::

    image, header = read_image("scan.dcm")          # float32 [0, 1], bright = dense, full resolution
    image, header = read_image(data, size=256)      # letterboxed to 256 x 256; header["letterbox"]

Files without a Part-10 meta header (no preamble / ``DICM`` prefix, no TransferSyntaxUID) but with a
valid dataset are read with ``force=True``; the transfer syntax is inferred from the dataset encoding
pydicom detected (e.g. Implicit VR Little Endian) and a warning is recorded.

Speed (the validate stage reads every file once, in a worker process):

* :func:`load_dicom` parses the in-memory bytes with ``defer_size``: large values (the pixel data)
  are not copied out of the buffer; pydicom still reads them on demand, and
  :func:`pixel_data_buffer` gives a zero-copy view of them.
* :func:`header_fields` converts only the ~30 raw elements it needs with pydicom's own value
  converters (:func:`pydicom.values.convert_value`), skipping the per-access ``Dataset`` machinery
  (about 10x cheaper); anything unusual (ambiguous or unknown VR, sequences, deferred values) takes the
  ordinary ``ds[tag]`` path, so the values are the ones pydicom would give.
* :func:`decode_pixels` views native (uncompressed) little-endian pixel data directly with
  :func:`numpy.frombuffer` when that is exactly what pydicom would return; everything else (compressed
  transfer syntaxes, big endian, signed values narrower than their container, float pixel data) is
  decoded by pydicom, first frame only, with the fastest installed plugin first where pydicom's own
  order is measurably slower (:data:`PREFERRED_DECODERS`).
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEGLSNearLossless,
)
from pydicom.valuerep import AMBIGUOUS_VR
from pydicom.values import convert_value

from .issues import DicomReadError, Issue

__all__ = [
    "PREFERRED_DECODERS",
    "LoadedDicom",
    "apply_rescale",
    "decode_pixels",
    "header_fields",
    "load_dicom",
    "modality_values",
    "pixel_data_buffer",
    "short_error",
]

#: Values larger than this stay in the input buffer until used (see :func:`load_dicom`).
_DEFER_BYTES = 16 * 1024
_PIXEL_DATA = 0x7FE00010
_SPECIFIC_CHARACTER_SET = 0x00080005
#: Transfer syntaxes whose pixel data :func:`decode_pixels` may view directly (native, little endian).
_NATIVE_LE = {str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian)}

#: Decoder plugin tried first per transfer syntax where pydicom's default order (pylibjpeg first) is
#: measurably slower. JPEG-LS lossless, 820 x 864 x 10 bit: pyjpegls (CharLS) 10 ms, pylibjpeg
#: (libjpeg) 49 ms. Elsewhere pylibjpeg is the fastest installed plugin and stays first (JPEG 2000
#: lossless: openjpeg 62 ms vs Pillow 74 ms; RLE: pylibjpeg-rle 2.8 ms vs pydicom's numpy 12.6 ms).
#: When the preferred plugin fails the others still get their turn.
PREFERRED_DECODERS: dict[str, str] = {str(JPEGLSLossless): "pyjpegls", str(JPEGLSNearLossless): "pyjpegls"}

#: Tags whose presence makes a meta-less byte stream plausibly a DICOM dataset.
_DATASET_MARKERS = (
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080060,  # Modality
    0x00280010,  # Rows
    0x7FE00010,  # PixelData
)
#: Media Storage Directory Storage: the SOP class of a DICOMDIR (PS3.10 section 7.2).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
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
    """``"TypeName: first line of the message"``, truncated: for quarantine reasons, never a traceback.

    pydicom's "exceptions were raised by all available plugins:" keeps each plugin's line (joined by
    "; "): the first line alone names no cause.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    msg = lines[0] if lines else ""
    if msg.endswith("plugins:") and len(lines) > 1:
        msg = f"{msg} {'; '.join(lines[1:])}"
        limit = max(limit, 360)
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


def _is_dicomdir(ds: Dataset) -> bool:
    """A DICOMDIR: Media Storage Directory SOP class in the meta header, or its directory records."""
    try:
        meta = getattr(ds, "file_meta", None)
        sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
        return sop_class == MEDIA_STORAGE_DIRECTORY or 0x00041220 in ds  # DirectoryRecordSequence
    except Exception:
        return False


def load_dicom(source: bytes | str | os.PathLike[str], *, max_bytes: int | None = None) -> LoadedDicom:
    """Parse a DICOM file from bytes, a local path or an ``s3://`` URI.

    Raises :class:`DicomReadError` (never anything else for bad content) with issue codes
    ``empty_file``, ``too_large``, ``not_dicom``, ``dicomdir`` (a file-set index, no image),
    ``unreadable`` (truncated or corrupt header).
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
            ds = pydicom.dcmread(io.BytesIO(data), force=not part10, defer_size=_DEFER_BYTES)
        except InvalidDicomError as exc:
            raise DicomReadError(Issue("not_dicom", f"not a DICOM file ({short_error(exc)})"), name) from exc
        except Exception as exc:
            raise DicomReadError(
                Issue("unreadable", f"unreadable DICOM (truncated or corrupt): {short_error(exc)}"), name
            ) from exc
    issues += _record_warnings(caught)
    if _is_dicomdir(ds):
        raise DicomReadError(
            Issue("dicomdir", "DICOMDIR (Media Storage Directory): a file-set index, not an image"), name
        )
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


def _encoding(ds: Dataset) -> Any:
    """The character set pydicom's ``Dataset.__getitem__`` would decode text values with."""
    return getattr(ds, "original_character_set", None) or ds._character_set


_MISSING = object()


def _raw_value(ds: Dataset, tag: int, encoding: Any) -> Any:
    """The value of ``tag`` in ``ds`` (``_MISSING`` when absent), as pydicom would convert it.

    Plain raw elements are converted with :func:`pydicom.values.convert_value` and the VR pydicom
    would use (explicit, else the dictionary's); ambiguous / unknown VRs, sequences and deferred values
    go through ``ds[tag]``. Conversion errors propagate.
    """
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if elem is None:
        return _MISSING
    if isinstance(elem, RawDataElement):
        vr = elem.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
        if (
            vr is not None
            and vr not in AMBIGUOUS_VR
            and vr not in ("SQ", "UN")
            and (elem.value is not None or elem.length == 0)
            and tag != _SPECIFIC_CHARACTER_SET
        ):
            return convert_value(vr, elem, encoding)
    return ds[tag].value


def _value(ds: Dataset, keyword: str, malformed: list[str], encoding: Any = None) -> Any:
    try:
        v = _raw_value(ds, _tag(keyword), encoding if encoding is not None else _encoding(ds))
        return None if v is _MISSING else v
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


def _source_bytes(ds: Dataset) -> bytes | None:
    """The bytes ``ds`` was parsed from (``load_dicom`` reads from an in-memory buffer).

    ``BytesIO.getvalue()`` returns the very bytes object the buffer was created from (no copy) while
    it is unmodified; ``getbuffer()`` would copy it first.
    """
    buf = getattr(ds, "buffer", None)
    return buf.getvalue() if isinstance(buf, io.BytesIO) else None


def _buffer_size(ds: Dataset) -> int | None:
    data = _source_bytes(ds)
    return None if data is None else len(data)


def _pixel_data_bytes(ds: Dataset, keyword: str, malformed: list[str]) -> int | None:
    """Length of the pixel data value: 0 when empty, None when not a byte string (encapsulated
    values are byte strings too). A deferred value is measured without reading it: its declared
    length, capped by what the buffer holds (a truncated file)."""
    tag = _tag(keyword)
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if isinstance(elem, RawDataElement) and elem.value is None and elem.length not in (0, 0xFFFFFFFF):
        size = _buffer_size(ds)
        if size is not None:
            return max(0, min(int(elem.length), size - int(elem.value_tell)))
    raw = _value(ds, keyword, malformed)
    return len(raw) if isinstance(raw, bytes | bytearray) else 0 if raw is None else None


def header_fields(ds: Dataset) -> dict[str, Any]:
    """The header attributes the checks and the manifest need, as plain Python values.

    Never raises: unreadable values become ``None`` and their keywords are listed under
    ``"malformed_attributes"``. PHI attributes are deliberately *not* included (the dict goes into the
    manifest); see :func:`isnetflow.dicom.checks.find_phi`.
    """
    malformed: list[str] = []
    out: dict[str, Any] = {}
    try:
        enc = _encoding(ds)
    except Exception:
        enc = None
    for key, kw in _STR_FIELDS.items():
        out[key] = _as_str(_value(ds, kw, malformed, enc))
    for key, kw in _INT_FIELDS.items():
        out[key] = _as_int(_value(ds, kw, malformed, enc), kw, malformed)
    for key, kw in _FLOAT_FIELDS.items():
        out[key] = _as_float(_value(ds, kw, malformed, enc), kw, malformed)
    spacing = _value(ds, "PixelSpacing", malformed, enc) or _value(ds, "ImagerPixelSpacing", malformed, enc)
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
    pixel_kw = next((kw for kw in _PIXEL_KEYWORDS if _tag(kw) in ds._dict), None)
    out["pixel_data_element"] = pixel_kw
    out["pixel_data_bytes"] = None
    if pixel_kw is not None:
        out["pixel_data_bytes"] = _pixel_data_bytes(ds, pixel_kw, malformed)
    try:
        out["has_modality_lut_sequence"] = "ModalityLUTSequence" in ds
    except Exception:
        out["has_modality_lut_sequence"] = False
    out["malformed_attributes"] = sorted(set(malformed))
    return out


def element_values(ds: Dataset, keywords: Iterable[str]) -> Iterable[tuple[str, str | None, Any]]:
    """``(keyword, VR, value)`` for each of ``keywords`` present in ``ds`` (converted like
    :func:`header_fields`); a value that cannot be converted is yielded as the exception instead."""
    try:
        enc = _encoding(ds)
    except Exception:
        enc = None
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is None or tag not in ds._dict:
            continue
        try:
            value = _raw_value(ds, tag, enc)
            elem = ds._dict.get(tag)  # type: ignore[call-overload]
            vr = elem.VR if elem is not None and elem.VR is not None else dictionary_VR(tag)
        except Exception as exc:
            yield kw, None, exc
            continue
        yield kw, vr, value


def pixel_data_buffer(ds: Dataset) -> bytes | memoryview:
    """The raw value of PixelData: a zero-copy view into the input buffer when the value was deferred
    by :func:`load_dicom`, else the element's bytes (may raise, like ``ds.PixelData``)."""
    elem = ds._dict.get(_PIXEL_DATA)  # type: ignore[call-overload]
    if isinstance(elem, RawDataElement) and elem.value is None and elem.length not in (0, 0xFFFFFFFF):
        data = _source_bytes(ds)
        if data is not None:
            start = int(elem.value_tell)
            return memoryview(data)[start : start + int(elem.length)]
    value = ds.PixelData
    return value if isinstance(value, bytes | memoryview) else bytes(value)


def _native_view(ds: Dataset, fields: dict[str, Any], *, mask: bool = True) -> np.ndarray | None:
    """Native little-endian grayscale pixel data as a (read-only) view, when that is exactly what
    pydicom's decoder returns; None otherwise (the caller then lets pydicom decode).

    Exact because: unsigned values need no sign extension (bits above BitsStored, which pydicom
    masks, are masked here too: a copy, only then), signed values fill their container
    (BitsStored == BitsAllocated), one frame, one sample, little endian. ``mask=False`` skips the
    masking (and its pass over the pixels) for callers that have rejected such values already.
    """
    f = fields
    ba, bs, pr = f.get("bits_allocated"), f.get("bits_stored"), f.get("pixel_representation") or 0
    rows, cols = f.get("rows"), f.get("columns")
    if (
        f.get("pixel_data_element") != "PixelData"
        or f.get("transfer_syntax_uid") not in _NATIVE_LE
        or ba not in (8, 16)
        or bs is None
        or not 1 <= bs <= ba
        or pr not in (0, 1)
        or (pr == 1 and bs != ba)
        or (f.get("samples_per_pixel") or 1) != 1
        or (f.get("number_of_frames") or 1) != 1
        or not rows
        or not cols
    ):
        return None
    n = int(rows) * int(cols)
    dtype = np.dtype(("u1" if ba == 8 else "<u2") if pr == 0 else ("i1" if ba == 8 else "<i2"))
    buf = pixel_data_buffer(ds)
    if len(buf) < n * dtype.itemsize:
        return None
    view = np.frombuffer(buf, dtype=dtype, count=n).reshape(int(rows), int(cols))
    if mask and pr == 0 and bs < ba and int(view.max()) >> bs:
        view = np.bitwise_and(view, np.array((1 << bs) - 1, dtype=dtype))
    return view


def decode_pixels(ds: Dataset, fields: dict[str, Any] | None = None, *, writeable: bool = True) -> np.ndarray:
    """Stored pixel values of the (first) frame as a 2-D array (may raise).

    Native little-endian data is viewed in place when that equals pydicom's result (see
    :func:`_native_view`; ``fields`` are :func:`header_fields`, computed when not given); otherwise
    pydicom's decoders run. With ``writeable=False`` the returned array may be a read-only view.
    """
    view = _native_view(ds, fields if fields is not None else header_fields(ds))
    if view is not None:
        return view.copy() if writeable else view
    arr = _decode_first_frame(ds)
    if arr.ndim == 3 and arr.shape[0] >= 1 and int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a single grayscale frame, decoded shape {arr.shape}")
    return arr


def _decode_first_frame(ds: Dataset) -> np.ndarray:
    """The first frame decoded by pydicom: the preferred plugin first (:data:`PREFERRED_DECODERS`),
    then pydicom's own order over every installed plugin (whose error names them all).

    When the preferred plugin fails and another one decodes the data, a warning says so (it becomes a
    ``pydicom_warning`` in the manifest): two decoders disagreeing about a stream is worth a look.
    """
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return np.asarray(ds.pixel_array)  # pydicom raises its own clear error for the syntax
    preferred = PREFERRED_DECODERS.get(ts)
    if preferred is not None and preferred in decoder.available_plugins:
        try:
            return np.asarray(decoder.as_array(ds, index=0, decoding_plugin=preferred)[0])
        except Exception as exc:  # the remaining plugins are tried next and report any failure
            arr = np.asarray(decoder.as_array(ds, index=0)[0])
            warnings.warn(
                f"{preferred} could not decode the pixel data ({short_error(exc, 120)}); another plugin did",
                UserWarning,
                stacklevel=2,
            )
            return arr
    return np.asarray(decoder.as_array(ds, index=0)[0])


def modality_values(ds: Dataset, raw: np.ndarray, fields: dict[str, Any] | None = None) -> np.ndarray:
    """Apply the modality LUT: a Modality LUT Sequence via pydicom, else RescaleSlope/Intercept.

    Returns float32 values in modality units (for CR/DX usually unitless "US" detector values).
    """
    f = fields if fields is not None else header_fields(ds)
    if f.get("has_modality_lut_sequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    return apply_rescale(raw, f.get("rescale_slope"), f.get("rescale_intercept"))


def apply_rescale(raw: np.ndarray, slope: float | None, intercept: float | None) -> np.ndarray:
    """``raw * slope + intercept`` in float32 (a new array), the way :func:`modality_values` does it."""
    values = raw.astype(np.float32)
    if slope is not None and slope != 1.0:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values
