"""PNG and JPEG inputs, as public chest X-ray collections ship them: bytes -> checks -> normalized image.

DICOM is the first-class input; a PNG or JPEG file is an input only when ``labels.csv`` lists it (an
unlisted one stays an ignored ``not_dicom`` stray). :func:`analyze_picture` returns the same
:class:`~isnetflow.dicom.ingest.Analysis` as the DICOM path, so the validate stage writes the same
manifest row and the same normalized image:

* **Identity.** A picture has no header: ``patient_id`` and ``site`` come from labels.csv only
  (missing: ``missing_identifier`` / ``no_site``, as for a DICOM file without them), and its
  SOPInstanceUID and StudyInstanceUID are derived from the file's SHA-256 (:func:`picture_uid`:
  ``2.25.<128-bit integer>``, the UUID-derived UID form), so ``images/<key>.png`` and
  ``masks/<key>.png`` are keyed the same way for both kinds, and the same bytes always get the same key.
* **Decoding** (Pillow; PNG, JPEG; EXIF orientation applied): ``L`` and ``LA`` (8 bit), ``I;16`` / ``I``
  (16-bit gray), ``1`` (bilevel), ``P`` (palette: converted to RGB), ``RGB`` / ``RGBA`` / ``CMYK`` /
  ``YCbCr``. A colour image is accepted as gray when its channels agree (:func:`colour_pixels`: fewer
  than :data:`COLOUR_MIN_PIXELS` pixels, or under :data:`COLOUR_MIN_SHARE` of them, have channels that
  differ by more than :data:`COLOUR_TOLERANCE` levels); it is then reduced to luma (ITU-R 601,
  Pillow's ``convert("L")``). Alpha is ignored (the colour channels are the radiograph). Anything else is a
  ``colour_image``: coloured arrows, annotations, viewer text or a tint drawn on the film, which would
  hand a classifier a cue the DICOM inputs never carry.
* **Pixels and normalization**: the DICOM path's own: ``constant_image`` / ``low_contrast``
  (:func:`~isnetflow.dicom.checks.check_pixels`), the robust percentile window (a picture has no VOI
  window: ``validate.window: dicom`` falls back to it), bright = dense (a radiograph PNG/JPEG is
  displayed like MONOCHROME2; the manifest says ``MONOCHROME2``), the letterbox to ``image_size``.
* Not applicable (no header): modality, view, PHI attributes, BurnedInAnnotation, UID syntax, bit depth
  and transfer syntax checks.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from isnetflow.config import ValidateConfig

from .checks import check_pixels
from .ingest import Analysis
from .issues import CheckProfile, Issue, errors, in_profile
from .normalize import _percentile_window, _robust_sample, normalize_letterbox
from .reader import short_error

__all__ = [
    "COLOUR_MIN_PIXELS",
    "COLOUR_MIN_SHARE",
    "COLOUR_TOLERANCE",
    "PICTURE_SUFFIXES",
    "analyze_picture",
    "colour_pixels",
    "is_picture",
    "picture_uid",
]

#: File name extensions of the picture inputs (lower case).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: A pixel is coloured when its channels differ by more than this (of 255): a gray image stored as RGB
#: differs by 0, by 1-3 levels after JPEG compression; a drawn arrow or coloured text by 100 or more.
COLOUR_TOLERANCE = 24
#: An image is a colour image when at least this many of its pixels are coloured ...
COLOUR_MIN_PIXELS = 16
#: ... and they are at least this share of its pixels (a 40 px arrow 2 px wide on a 512 px image: 3e-4).
COLOUR_MIN_SHARE = 1e-4

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG"}  # MPO: a multi-picture JPEG (cameras)


def is_picture(data: bytes, name: str = "") -> bool:
    """Whether ``data`` (a file named ``name``) is to be read as a PNG/JPEG picture: PNG or JPEG content,
    or a picture's name on something that is not DICOM (then decoding it fails: ``decode_failed``)."""
    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        return True
    return name.lower().endswith(PICTURE_SUFFIXES) and data[128:132] != b"DICM"


def picture_uid(sha256: str, what: str = "image") -> str:
    """A DICOM-syntax UID for a picture, derived from its SHA-256 (hex): ``2.25.<int>`` of 128 bits of
    ``sha256(what + ":" + sha256)``; ``what`` tells the instance (``image``) and study (``study``) apart."""
    digest = hashlib.sha256(f"{what}:{sha256}".encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def colour_pixels(rgb: np.ndarray, tolerance: int = COLOUR_TOLERANCE) -> int:
    """How many pixels of an ``(H, W, 3)`` uint8 image have channels differing by more than ``tolerance``."""
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    return int(np.count_nonzero(spread > tolerance))


def _gray(im: Image.Image) -> tuple[np.ndarray | None, int, list[Issue]]:
    """The picture's gray stored values, their bit depth, and the colour issue when it is not gray."""
    mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("L", "LA"):
        return np.asarray(im.getchannel(0) if mode == "LA" else im), 8, []
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False), 16, []
    if mode == "I":  # 16-bit PNGs on older Pillow
        values = np.asarray(im)
        return values, 16 if values.min() >= 0 and values.max() < 65536 else 32, []
    if mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if mode in ("P", "PA") and "transparency" in im.info else "RGB")
    rgb_image = im.convert("RGB") if im.mode != "RGB" else im  # alpha ignored
    rgb = np.asarray(rgb_image)
    n = colour_pixels(rgb)
    if n >= COLOUR_MIN_PIXELS and n >= COLOUR_MIN_SHARE * rgb.shape[0] * rgb.shape[1]:
        share = n / (rgb.shape[0] * rgb.shape[1])
        message = (
            f"colour image ({mode}): {n} pixels ({share:.2%}) have channels differing by more than "
            f"{COLOUR_TOLERANCE} levels (coloured arrows, annotations or a tint on the radiograph)"
        )
        return None, 8, [Issue("colour_image", message)]
    return np.asarray(rgb_image.convert("L")), 8, []


def _identity_issues(fields: dict[str, Any], cfg: ValidateConfig, checks: CheckProfile) -> list[Issue]:
    issues: list[Issue] = []
    if "PatientID" in cfg.required_identifiers and not fields.get("patient_id"):
        issues.append(
            Issue(
                "missing_identifier",
                "missing required identifier(s): patient_id (a PNG/JPEG needs it in labels)",
            )
        )
    if cfg.require_site and not fields.get("site"):
        issues.append(Issue("no_site", "unknown site: a PNG/JPEG needs its site in labels"))
    return in_profile(issues, checks)


def analyze_picture(
    data: bytes,
    cfg: ValidateConfig,
    *,
    patient_id: str | None = None,
    site: str | None = None,
    checks: CheckProfile = "validate",
) -> Analysis:
    """Check and normalize one PNG/JPEG picture like :func:`~isnetflow.dicom.ingest.analyze` does a DICOM
    file (see the module docstring for what applies). Never raises."""
    digest = hashlib.sha256(data).hexdigest()
    fields: dict[str, Any] = {"patient_id": patient_id, "site": site}
    if not data:
        return Analysis(fields, [Issue("empty_file", "empty file (0 bytes)")], digest, 0)
    fields.update(
        sop_instance_uid=picture_uid(digest),
        study_instance_uid=picture_uid(digest, "study"),
        photometric_interpretation="MONOCHROME2",  # bright = dense, as such pictures are displayed
    )
    issues = _identity_issues(fields, cfg, checks)
    if errors(issues):
        return Analysis(fields, issues, digest, len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        kind = _FORMATS.get(str(im.format))
        if kind is None:
            return Analysis(
                fields,
                [Issue("decode_failed", f"a {im.format} image: only PNG and JPEG pictures are read")],
                digest,
                len(data),
            )
        cols, rows = im.size
        fields.update(rows=rows, columns=cols)
        frames = int(getattr(im, "n_frames", 1) or 1)
        if rows * cols * frames > cfg.max_pixels:
            message = (
                f"image size {rows}x{cols} exceeds the decompression-bomb limit of {cfg.max_pixels} pixels"
            )
            return Analysis(fields, [Issue("image_too_large", message)], digest, len(data))
        if frames > 1:
            message = f"multi-frame {kind} ({frames} frames), expected one radiograph"
            return Analysis(fields, [Issue("multi_frame", message)], digest, len(data))
        im.load()
        values, bits, colour = _gray(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as exc:
        return Analysis(fields, [Issue("image_too_large", short_error(exc))], digest, len(data))
    except Exception as exc:  # UnidentifiedImageError, a truncated stream, a bad EXIF block, ...: never raise
        message = f"not a decodable PNG/JPEG image: {short_error(exc)}"
        return Analysis(fields, [Issue("decode_failed", message)], digest, len(data))
    rows, cols = values.shape if values is not None else (fields["rows"], fields["columns"])
    fields.update(rows=rows, columns=cols, bits_allocated=bits, bits_stored=bits, pixel_representation=0)
    issues += colour
    if values is None or errors(issues):
        return Analysis(fields, issues, digest, len(data))
    with np.errstate(all="ignore"):
        robust = _percentile_window(_robust_sample(values), cfg.percentiles)
        issues += check_pixels(values, values, robust, fields, cfg)
        if errors(issues):
            return Analysis(fields, issues, digest, len(data))
        image, box = normalize_letterbox(
            values, window=robust, photometric="MONOCHROME2", size=cfg.image_size
        )
    return Analysis(fields, issues, digest, len(data), image=image, letterbox=box, window=robust)
