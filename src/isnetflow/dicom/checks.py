"""Per-file checks on the header dict and the pixels; each finding is an :class:`Issue` (no raising).

Three groups, run in this order by :func:`isnetflow.dicom.ingest.analyze`:

* :func:`check_structure` - can the pixels be decoded safely? (pixel data present, dimensions,
  decompression-bomb limit from the header *before* decoding, grayscale, bit depths, transfer syntax
  decoder available, native pixel data length). :func:`isnetflow.dicom.read_image` relies on these.
* :func:`check_policy` - is this an image the project accepts? (modality, frontal view, identifiers,
  UID syntax, site, de-identification via :func:`find_phi`, burned-in annotation).
* :func:`check_pixels` - are the decoded values usable? (finite, within BitsStored, not constant).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from isnetflow.config import ValidateConfig

from .issues import Issue, Severity
from .reader import element_values, pixel_data_buffer

__all__ = [
    "check_pixels",
    "check_policy",
    "check_stored_range",
    "check_structure",
    "find_phi",
]

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_KEYWORD_TO_FIELD = {
    "SOPInstanceUID": "sop_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "PatientID": "patient_id",
    "Modality": "modality",
    "InstitutionName": "institution_name",
}


#: Image Pixel module attributes whose values the decoder needs (an unreadable value is an error).
_PIXEL_MODULE = {
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
}
_REQUIRED_PIXEL_MODULE = {
    "SamplesPerPixel": "samples_per_pixel",
    "PixelRepresentation": "pixel_representation",
}


def _mp(n: int) -> str:
    return f"{n / 1e6:.0f} MP" if n >= 10_000_000 else f"{n / 1e6:.1f} MP"


def check_structure(f: Mapping[str, Any], cfg: ValidateConfig) -> list[Issue]:
    """Checks that make decoding safe and meaningful, from header fields only."""
    issues: list[Issue] = []
    if f.get("pixel_data_element") is None:
        return [Issue("no_pixel_data", "missing pixel data")]
    if f.get("pixel_data_bytes") == 0:
        return [Issue("no_pixel_data", f"missing pixel data (empty {f['pixel_data_element']} element)")]
    bad = [kw for kw in f.get("malformed_attributes") or [] if kw in _PIXEL_MODULE]
    if bad:
        return [Issue("malformed_attribute", f"unreadable image attribute value(s): {', '.join(bad)}")]
    rows, cols = f.get("rows"), f.get("columns")
    if not rows or not cols or rows <= 0 or cols <= 0:
        return [Issue("bad_dimensions", f"missing or invalid image dimensions (Rows={rows}, Columns={cols})")]
    frames = f.get("number_of_frames") or 1
    spp = f.get("samples_per_pixel") or 1
    total = int(rows) * int(cols) * max(1, int(frames)) * max(1, int(spp))
    if total > cfg.max_pixels:
        return [
            Issue(
                "image_too_large",
                f"declared image size {rows}x{cols}"
                + (f"x{frames} frames" if frames > 1 else "")
                + f" ({_mp(total)}) exceeds the decompression-bomb limit of {_mp(cfg.max_pixels)}",
            )
        ]
    if frames > 1:
        issues.append(Issue("multi_frame", f"multi-frame image ({frames} frames), expected one radiograph"))
    missing = [kw for kw, key in _REQUIRED_PIXEL_MODULE.items() if f.get(key) is None]
    if missing and f.get("pixel_data_element") == "PixelData":
        issues.append(
            Issue("missing_attribute", f"missing required image attribute(s): {', '.join(missing)}")
        )
    if spp != 1:
        issues.append(Issue("not_grayscale", f"SamplesPerPixel={spp}, expected 1 (grayscale)"))
    pi = f.get("photometric_interpretation")
    if pi is None:
        issues.append(Issue("photometric", "missing PhotometricInterpretation"))
    elif pi not in cfg.photometric:
        issues.append(
            Issue("photometric", f"photometric interpretation {pi} not in {', '.join(cfg.photometric)}")
        )
    is_float = f.get("pixel_data_element") != "PixelData"
    ba, bs = f.get("bits_allocated"), f.get("bits_stored")
    if not is_float:
        lo, hi = cfg.bits_stored_range
        if ba not in (8, 16, 32):
            issues.append(
                Issue("bits", f"implausible BitsAllocated={ba} for a radiograph (expected 8 or 16)")
            )
        elif bs is None:
            issues.append(Issue("bits", "missing BitsStored"))
        elif bs > ba:
            issues.append(Issue("bits", f"implausible BitsStored={bs} > BitsAllocated={ba}"))
        elif not lo <= bs <= hi:
            issues.append(Issue("bits", f"implausible BitsStored={bs} for a radiograph (expected {lo}-{hi})"))
        elif f.get("high_bit") is not None and f["high_bit"] != bs - 1:
            issues.append(
                Issue("high_bit", f"HighBit={f['high_bit']} inconsistent with BitsStored={bs}", "warning")
            )
        if f.get("pixel_representation") not in (None, 0, 1):
            issues.append(Issue("bits", f"invalid PixelRepresentation={f['pixel_representation']}"))
    issues += _check_transfer_syntax(f)
    if (
        not is_float
        and not any(i.is_error for i in issues)
        and not UID(f["transfer_syntax_uid"]).is_encapsulated
        and f.get("pixel_data_bytes") is not None
    ):
        expected = (total * int(ba or 0) + 7) // 8
        got = int(f["pixel_data_bytes"])
        if got < expected:
            issues.append(Issue("pixel_data_truncated", f"pixel data truncated ({got} of {expected} bytes)"))
        elif got > expected + 1:
            issues.append(
                Issue(
                    "pixel_data_length",
                    f"pixel data longer than expected ({got} > {expected} bytes)",
                    "warning",
                )
            )
    return issues


def _check_transfer_syntax(f: Mapping[str, Any]) -> list[Issue]:
    from pydicom.pixels import get_decoder

    ts = f.get("transfer_syntax_uid")
    if not ts:
        return [Issue("transfer_syntax", "missing TransferSyntaxUID")]
    uid = UID(ts)
    if not uid.is_valid:
        return [Issue("transfer_syntax", f"malformed TransferSyntaxUID {ts!r}")]
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return [Issue("transfer_syntax", f"undecodable transfer syntax {uid.name} (no decoder for it)")]
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        return [
            Issue("transfer_syntax", f"undecodable transfer syntax {uid.name} (missing decoder: {missing})")
        ]
    return []


def find_phi(ds: Dataset, cfg: ValidateConfig, *patient_ids: str | None) -> list[str]:
    """Keywords of ``cfg.phi_attributes`` holding something other than empty / a placeholder.

    ``patient_ids`` are the (pseudonymous) identifiers of the image: the one the project uses (from
    labels.csv) and the file's own PatientID. A value equal to any of them is a pseudonym, accepted
    when ``cfg.allow_pseudonym_name``: a de-identified export often writes its pseudonym into both
    PatientName and PatientID, whatever id labels.csv then assigns. Unreadable values count as
    present (fail safe).
    """
    placeholders = {p.upper() for p in cfg.deid_placeholders}
    pseudonyms = {p.strip() for p in patient_ids if p and p.strip()}
    found: list[str] = []
    for kw, vr, value in element_values(ds, cfg.phi_attributes):
        if isinstance(value, Exception):
            found.append(kw)
            continue
        if value is None:
            continue
        try:
            if vr == "SQ":
                if len(value):
                    found.append(kw)
                continue
            values = list(value) if type(value).__name__ == "MultiValue" else [value]
            texts = [str(v).replace("^", " ").replace("=", " ").strip() for v in values]
            texts = [t for t in texts if t]
        except Exception:
            found.append(kw)
            continue
        for t in texts:
            if t.upper() in placeholders:
                continue
            if cfg.allow_pseudonym_name and t in pseudonyms:
                continue
            found.append(kw)
            break
    return found


def check_policy(f: Mapping[str, Any], cfg: ValidateConfig, *, phi: list[str] | None = None) -> list[Issue]:
    """Acceptance rules on header fields (``f`` holds the *effective* patient_id / site)."""
    issues: list[Issue] = []
    mod = f.get("modality")
    if mod is None:
        issues.append(Issue("modality", "missing Modality"))
    elif mod not in cfg.modalities:
        issues.append(Issue("modality", f"modality {mod} not in {', '.join(cfg.modalities)}"))
    view = f.get("view_position")
    if view is None:
        issues.append(Issue("no_view_position", "no ViewPosition: frontal view not verified", "warning"))
    elif view.upper() not in {v.upper() for v in cfg.frontal_views}:
        issues.append(Issue("view", f"non-frontal view (ViewPosition={view})"))
    missing = [kw for kw in cfg.required_identifiers if not f.get(_KEYWORD_TO_FIELD.get(kw, kw))]
    if missing:
        issues.append(Issue("missing_identifier", f"missing required identifier(s): {', '.join(missing)}"))
    for kw in ("SOPInstanceUID", "StudyInstanceUID"):
        uid = f.get(_KEYWORD_TO_FIELD[kw])
        if uid and (len(uid) > 64 or not _UID_RE.match(uid)):
            shown = uid if len(uid) <= 70 else uid[:67] + "..."
            issues.append(Issue("malformed_uid", f"malformed {kw} {shown!r}"))
    if cfg.require_site and not f.get("site"):
        issues.append(Issue("no_site", "unknown site: no InstitutionName and no site in labels"))
    if cfg.require_deidentified and phi:
        issues.append(Issue("phi", f"PHI present: {', '.join(phi)}"))
    if (f.get("burned_in_annotation") or "").upper() == "YES":
        sev: Severity = "error" if cfg.burned_in_annotation == "quarantine" else "warning"
        issues.append(Issue("burned_in", "burned-in annotation (BurnedInAnnotation=YES)", sev))
    bad = [kw for kw in f.get("malformed_attributes") or [] if kw not in _PIXEL_MODULE]
    if bad:
        issues.append(
            Issue("malformed_attribute", f"unreadable attribute value(s): {', '.join(bad)}", "warning")
        )
    return issues


def check_stored_range(
    ds: Dataset, f: Mapping[str, Any], pixels: np.ndarray | None = None, *, maximum: int | None = None
) -> list[Issue]:
    """Native unsigned pixel data: stored values must fit in BitsStored.

    pydicom masks the bits above BitsStored when decoding, so an image whose values do not fit (a
    wrong BitsStored) would silently wrap; this looks at the raw buffer instead (``pixels``: an
    unmasked view of it when the caller has one, ``maximum``: its maximum when already known).
    """
    ba, bs = f.get("bits_allocated"), f.get("bits_stored")
    ts = f.get("transfer_syntax_uid")
    if (
        f.get("pixel_data_element") != "PixelData"
        or ba not in (8, 16)
        or bs is None
        or bs >= ba
        or f.get("pixel_representation") not in (0, None)
        or not ts
        or UID(ts).is_encapsulated
        or ts == "1.2.840.10008.1.2.2"  # big endian: rare, skip
    ):
        return []
    n = int(f["rows"]) * int(f["columns"])
    if pixels is None:
        dtype = np.dtype(np.uint8 if ba == 8 else "<u2")
        pixels = np.frombuffer(pixel_data_buffer(ds), dtype=dtype, count=n)
    buf = pixels.reshape(-1)
    if not (int(buf.max()) if maximum is None else maximum) >> bs:  # one pass, no temporary
        return []
    over = int(np.count_nonzero(np.right_shift(buf, bs)))
    if over:
        return [
            Issue(
                "bits_exceeded",
                f"pixel values exceed BitsStored={bs} ({over} of {n} pixels, max {int(buf.max())})",
            )
        ]
    return []


def check_pixels(
    raw: np.ndarray,
    values: np.ndarray | None,
    robust_window: tuple[float, float],
    f: Mapping[str, Any],
    cfg: ValidateConfig,
    *,
    stats: tuple[int, float, float] | None = None,
) -> list[Issue]:
    """Checks on decoded stored values ``raw`` and modality values ``values``.

    ``robust_window`` is the percentile window of ``values`` (``cfg.percentiles``). ``stats`` =
    (non-finite count, min, max) of ``values`` when the caller knows them without the array (then
    ``values`` may be None).
    """
    issues: list[Issue] = []
    if stats is None:
        if values is None:
            raise ValueError("check_pixels needs values or stats")
        finite = np.isfinite(values)
        bad = 0 if finite.all() else int(values.size - np.count_nonzero(finite))
        vmin, vmax = (float(values.min()), float(values.max())) if not bad else (0.0, 0.0)
    else:
        bad, vmin, vmax = stats
    if bad:
        return [Issue("non_finite", f"non-finite pixel values ({bad} of {raw.size} NaN/Inf)")]
    if vmin == vmax:
        return [Issue("constant_image", f"constant image (every pixel = {vmin:g})")]
    lo, hi = robust_window
    slope = abs(f.get("rescale_slope") or 1.0)
    levels = (hi - lo) / slope
    if np.issubdtype(raw.dtype, np.integer) and levels < cfg.min_gray_levels:
        issues.append(
            Issue(
                "low_contrast",
                f"near-constant image: {cfg.percentiles[0]:g}-{cfg.percentiles[1]:g} percentile range "
                f"spans {levels:.0f} stored levels (< {cfg.min_gray_levels})",
            )
        )
    return issues
