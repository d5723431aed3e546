"""One file, end to end in memory: bytes -> checks -> normalized image (pure: no file system access).

:func:`analyze` is what the validate stage runs per file (in a worker process); :func:`read_image` is
the convenience reader for later stages. Both share the same decode and normalization path, so a
mask or a heatmap computed on ``read_image(...)`` lines up with the training images in
``DIR/images/``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isnetflow.config import ValidateConfig

from .checks import check_pixels, check_policy, check_stored_range, check_structure, find_phi
from .issues import CHECK_PROFILES, CheckProfile, DicomReadError, Issue, errors, in_profile
from .normalize import (
    Letterbox,
    _dicom_window,
    _percentile_window,
    _robust_sample,
    normalize_letterbox,
)
from .reader import (
    _native_view,
    _record_warnings,
    apply_rescale,
    decode_pixels,
    header_fields,
    load_dicom,
    modality_values,
    short_error,
)

__all__ = ["Analysis", "analyze", "read_image"]


@dataclass
class Analysis:
    """Everything :func:`analyze` learned about one file.

    ``fields`` holds header values plus the effective ``patient_id`` / ``site`` (labels override the
    header); ``image`` is the normalized, letterboxed float32 image, present only when no error was
    found.
    """

    fields: dict[str, Any]
    issues: list[Issue]
    sha256: str
    n_bytes: int
    image: np.ndarray | None = None
    letterbox: Letterbox | None = None
    window: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no issue is an error (warnings allowed)."""
        return not errors(self.issues)


@dataclass
class _Pixels:
    """Checked pixels, ready to render: ``pixels * slope + intercept`` are the modality values."""

    pixels: np.ndarray
    slope: float
    intercept: float
    window: tuple[float, float]


def _affine_lut(fields: dict[str, Any], raw: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) when the modality LUT is affine with finite coefficients on integer stored
    values, i.e. can be applied lazily; None when the modality values must be materialized."""
    if fields.get("has_modality_lut_sequence") or not np.issubdtype(raw.dtype, np.integer):
        return None
    slope = fields.get("rescale_slope")
    slope = 1.0 if slope is None else float(slope)
    intercept = float(fields.get("rescale_intercept") or 0.0)
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        return None
    return slope, intercept


def _value_stats(
    raw: np.ndarray, slope: float, intercept: float, extremes: tuple[Any, Any] | None = None
) -> tuple[int, float, float] | None:
    """(non-finite count, min, max) of the modality values without computing them: the float32 affine
    map is monotone, so its extremes are the images of the stored extremes (same float32 operations
    as :func:`modality_values`; ``extremes``: the stored min and max when known). None when an
    extreme overflows (then count on the full array)."""
    lo, hi = extremes if extremes is not None else (raw.min(), raw.max())
    ext = apply_rescale(np.array([lo, hi], dtype=raw.dtype), slope, intercept)
    if not np.isfinite(ext).all():
        return None
    return 0, float(ext.min()), float(ext.max())


def _checked_pixels(
    ds: Any, fields: dict[str, Any], cfg: ValidateConfig
) -> tuple[_Pixels | None, list[Issue]]:
    """Decode and check the pixels, compute the window (full resolution; no output image yet).

    Native pixel data is viewed in place and its extremes are computed once (for the BitsStored
    check and the value statistics); other data is decoded by pydicom after the check.
    """
    try:  # unmasked: check_stored_range looks at the raw bits
        view = _native_view(ds, fields, mask=False)
    except Exception:
        view = None  # then pydicom decodes below, and reports what is wrong
    extremes = None if view is None else (view.min(), view.max())
    issues = check_stored_range(ds, fields, view, maximum=None if extremes is None else int(extremes[1]))
    if issues:
        return None, issues
    values: np.ndarray | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # no masking needed: values above BitsStored were rejected just above
            raw = view if view is not None else decode_pixels(ds, fields, writeable=False)
            affine = _affine_lut(fields, raw)
            if affine is None:
                values = modality_values(ds, raw, fields)
        except Exception as exc:
            return None, [Issue("decode_failed", f"pixel data could not be decoded: {short_error(exc)}")]
    issues += _record_warnings(caught)
    if raw.shape != (fields["rows"], fields["columns"]):
        issues.append(
            Issue(
                "decode_failed",
                f"decoded shape {raw.shape} differs from Rows x Columns "
                f"({fields['rows']}, {fields['columns']})",
            )
        )
        return None, issues
    with np.errstate(all="ignore"):
        stats = None
        if affine is not None:
            stats = _value_stats(raw, *affine, extremes=extremes)
            if stats is None:
                values, affine = apply_rescale(raw, *affine), None
        # the percentile sample (intensity_window's sub-grid): from the stored values when the modality
        # LUT is lazy, so only the sub-grid is converted (same float32 operations, same values)
        if affine is not None:
            sample = apply_rescale(_robust_sample(raw), *affine)
        else:
            assert values is not None
            sample = _robust_sample(values)
        robust = _percentile_window(sample, cfg.percentiles)
        issues += check_pixels(raw, values, robust, fields, cfg, stats=stats)
        if errors(issues):
            return None, issues
        window = robust
        if cfg.window == "dicom":
            window = _dicom_window(fields.get("window_center"), fields.get("window_width")) or robust
    if affine is not None:
        return _Pixels(raw, affine[0], affine[1], window), issues
    assert values is not None
    return _Pixels(values, 1.0, 0.0, window), issues


def _render(pix: _Pixels, fields: dict[str, Any], size: int | None) -> tuple[np.ndarray, Letterbox | None]:
    with np.errstate(all="ignore"):
        return normalize_letterbox(
            pix.pixels,
            window=pix.window,
            photometric=fields["photometric_interpretation"],
            size=size,
            slope=pix.slope,
            intercept=pix.intercept,
        )


def analyze(
    data: bytes,
    cfg: ValidateConfig,
    *,
    patient_id: str | None = None,
    site: str | None = None,
    checks: CheckProfile = "validate",
) -> Analysis:
    """Run the per-file checks of ``checks`` on ``data`` and, when they pass, normalize the image.

    ``patient_id`` / ``site`` (from labels.csv) override PatientID / InstitutionName. ``checks`` names
    the use (:data:`~isnetflow.dicom.issues.CHECK_PROFILES`): ``validate`` applies every check,
    ``explain`` only those that concern the image itself (no identifier, site or PHI check). Never
    raises: any failure becomes an error :class:`Issue` (the first one is the quarantine reason).
    """
    digest = hashlib.sha256(data).hexdigest()
    fields: dict[str, Any] = {"patient_id": patient_id, "site": site}
    try:
        loaded = load_dicom(data, max_bytes=cfg.max_file_bytes)
    except DicomReadError as exc:
        return Analysis(fields, [exc.issue], digest, len(data))
    ds = loaded.dataset
    issues = list(loaded.warnings)
    try:
        fields = header_fields(ds)
        own_patient_id = fields.get("patient_id")  # the file's PatientID, before labels override it
        fields["patient_id"] = patient_id or own_patient_id
        fields["site"] = site or fields.get("institution_name")
        issues += check_structure(fields, cfg)
        check_phi = cfg.require_deidentified and "phi" in CHECK_PROFILES[checks]
        phi = find_phi(ds, cfg, fields["patient_id"], own_patient_id) if check_phi else []
        issues += in_profile(check_policy(fields, cfg, phi=phi), checks)
        if errors(issues):
            return Analysis(fields, issues, digest, len(data))
        pix, pixel_issues = _checked_pixels(ds, fields, cfg)
        issues += pixel_issues
        if pix is None:
            return Analysis(fields, issues, digest, len(data))
        boxed, box = _render(pix, fields, cfg.image_size)
        return Analysis(fields, issues, digest, len(data), image=boxed, letterbox=box, window=pix.window)
    except Exception as exc:  # a malformed file must never crash the run
        issues.append(Issue("unreadable", f"unreadable DICOM: {short_error(exc)}"))
        return Analysis(fields, issues, digest, len(data))


def read_image(
    source: bytes | str | os.PathLike[str],
    cfg: ValidateConfig | None = None,
    *,
    size: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read and normalize one DICOM image the way the validate stage does.

    Returns ``(image, header)``: ``image`` is float32 in [0, 1] with bright = dense (MONOCHROME1
    inverted), at full resolution, or letterboxed to ``size`` x ``size`` when ``size`` is given (then
    ``header["letterbox"]`` holds the padding/scale, see :class:`~isnetflow.dicom.normalize.Letterbox`).
    ``header`` is :func:`~isnetflow.dicom.reader.header_fields` plus ``window`` and ``warnings``.

    Policy checks (modality, view, PHI, ...) are *not* applied; structural problems that make the pixels
    unusable raise :class:`~isnetflow.dicom.issues.DicomReadError` naming the source and the reason.
    ``source`` may be bytes, a local path or an ``s3://`` URI.
    """
    cfg = cfg or ValidateConfig()
    name = None if isinstance(source, bytes | bytearray | memoryview) else str(source)
    loaded = load_dicom(source, max_bytes=cfg.max_file_bytes)
    fields = header_fields(loaded.dataset)
    issues = list(loaded.warnings) + check_structure(fields, cfg)
    problems = errors(issues)
    if problems:
        raise DicomReadError(problems[0], name)
    pix, pixel_issues = _checked_pixels(loaded.dataset, fields, cfg)
    issues += pixel_issues
    if pix is None:
        raise DicomReadError(errors(pixel_issues)[0], name)
    header: dict[str, Any] = {**fields, "window": pix.window, "warnings": [i.message for i in issues]}
    image, box = _render(pix, fields, size)
    if box is not None:
        header["letterbox"] = box.to_dict()
    return image, header
