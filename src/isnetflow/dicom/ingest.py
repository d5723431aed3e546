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
from .issues import DicomReadError, Issue, errors
from .normalize import Letterbox, intensity_window, letterbox, normalize_intensity
from .reader import _record_warnings, decode_pixels, header_fields, load_dicom, modality_values, short_error

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
        return not errors(self.issues)


def _normalize_checked(
    ds: Any, fields: dict[str, Any], cfg: ValidateConfig
) -> tuple[np.ndarray | None, tuple[float, float] | None, list[Issue]]:
    """Decode, check and normalize (full resolution). Returns (image or None, window, issues)."""
    issues = check_stored_range(ds, fields)
    if issues:
        return None, None, issues
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = decode_pixels(ds)
            values = modality_values(ds, raw, fields)
        except Exception as exc:
            return (
                None,
                None,
                [Issue("decode_failed", f"pixel data could not be decoded: {short_error(exc)}")],
            )
    issues += _record_warnings(caught)
    if raw.shape != (fields["rows"], fields["columns"]):
        issues.append(
            Issue(
                "decode_failed",
                f"decoded shape {raw.shape} differs from Rows x Columns "
                f"({fields['rows']}, {fields['columns']})",
            )
        )
        return None, None, issues
    with np.errstate(all="ignore"):
        robust = intensity_window(values, method="percentile", percentiles=cfg.percentiles)
        issues += check_pixels(raw, values, robust, fields, cfg)
        if errors(issues):
            return None, None, issues
        window = robust
        if cfg.window == "dicom":
            window = intensity_window(
                values,
                method="dicom",
                percentiles=cfg.percentiles,
                window_center=fields.get("window_center"),
                window_width=fields.get("window_width"),
            )
        image, window = normalize_intensity(
            values,
            photometric=fields["photometric_interpretation"],
            method="percentile",
            percentiles=cfg.percentiles,
            window=window,
        )
    return image, window, issues


def analyze(
    data: bytes,
    cfg: ValidateConfig,
    *,
    patient_id: str | None = None,
    site: str | None = None,
) -> Analysis:
    """Run every per-file check on ``data`` and, when it passes, normalize the image.

    ``patient_id`` / ``site`` (from labels.csv) override PatientID / InstitutionName. Never raises:
    any failure becomes an error :class:`Issue` (the first one is the quarantine reason).
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
        fields["patient_id"] = patient_id or fields.get("patient_id")
        fields["site"] = site or fields.get("institution_name")
        issues += check_structure(fields, cfg)
        phi = find_phi(ds, cfg, fields["patient_id"]) if cfg.require_deidentified else []
        issues += check_policy(fields, cfg, phi=phi)
        if errors(issues):
            return Analysis(fields, issues, digest, len(data))
        image, window, pixel_issues = _normalize_checked(ds, fields, cfg)
        issues += pixel_issues
        if image is None:
            return Analysis(fields, issues, digest, len(data))
        boxed, box = letterbox(image, cfg.image_size)
        return Analysis(fields, issues, digest, len(data), image=boxed, letterbox=box, window=window)
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
    image, window, pixel_issues = _normalize_checked(loaded.dataset, fields, cfg)
    issues += pixel_issues
    if image is None:
        raise DicomReadError(errors(pixel_issues)[0], name)
    header: dict[str, Any] = {**fields, "window": window, "warnings": [i.message for i in issues]}
    if size is not None:
        image, box = letterbox(image, size)
        header["letterbox"] = box.to_dict()
    return image, header
