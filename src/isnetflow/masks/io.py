"""Reading radiographs and reference masks into arrays, and writing masks.

Every reader returns arrays indexed ``[row, column]`` with row 0 at the top of the displayed image, the
layout of ``numpy.asarray(PIL.Image)`` and of pydicom's ``pixel_array``. (MONAI's ``LoadImage`` with its
default PIL reader transposes to ``[x, y]``; it is deliberately not used here.)

* DICOM goes through :func:`isnetflow.dicom.read_image` (modality LUT, robust window, MONOCHROME1
  inversion, files without meta header), so the segmenter sees what the validate stage produces.
* PNG / JPEG / TIFF / BMP: 8- or 16-bit grayscale or RGB(A); the EXIF orientation of JPEGs is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from isnetflow.dicom.source import DICOM_SUFFIXES

__all__ = [
    "RASTER_SUFFIXES",
    "LoadedImage",
    "ReferenceMask",
    "find_inputs",
    "is_dicom",
    "read_image",
    "read_reference_mask",
    "write_mask",
]

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


@dataclass
class LoadedImage:
    """A radiograph as float32 in [0, 1], bright = dense, at its original resolution."""

    pixels: np.ndarray
    source: str
    kind: str  # "dicom" | "raster"
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the pixels."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


@dataclass
class ReferenceMask:
    """A human/ground-truth mask: ``lung`` (bool) and ``ignore`` (bool, the 127 'neither' pixels)."""

    lung: np.ndarray
    ignore: np.ndarray


def is_dicom(path: str | Path) -> bool:
    """True for a DICOM suffix or a Part-10 preamble (``DICM`` at byte 128)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in RASTER_SUFFIXES:
        return False
    try:
        with p.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _raster_to_float(img: Image.Image, source: str) -> np.ndarray:
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode != "I" or arr.max(initial=0) > 255 else 255.0
        return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        return ((arr - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if img.mode not in ("L", "1"):
        img = img.convert("L")  # RGB / RGBA / P / LA: luminance
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D grayscale image, got shape {arr.shape}")
    return arr / (1.0 if img.mode == "1" else 255.0)


def read_image(path: str | Path) -> LoadedImage:
    """Read a DICOM or raster radiograph; raises ``ValueError`` naming the file on failure.

    Files with a raster suffix are decoded with Pillow; anything else is read as DICOM (which also
    covers files without a Part-10 header or without a suffix).
    """
    p = Path(path)
    if p.suffix.lower() not in RASTER_SUFFIXES:  # DICOM, including files without meta header / suffix
        from isnetflow.dicom import DicomReadError
        from isnetflow.dicom import read_image as read_dicom

        try:
            pixels, header = read_dicom(p)
        except (DicomReadError, OSError, ValueError) as exc:
            raise ValueError(f"{p}: cannot read DICOM: {exc}") from exc
        return LoadedImage(np.ascontiguousarray(pixels, dtype=np.float32), str(p), "dicom", header)
    try:
        with Image.open(p) as img:
            img.load()
            pixels = _raster_to_float(img, str(p))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{p}: cannot read image: {exc}") from exc
    if min(pixels.shape) < 8:
        raise ValueError(f"{p}: image too small ({pixels.shape[0]}x{pixels.shape[1]})")
    return LoadedImage(pixels, str(p), "raster", {"rows": pixels.shape[0], "columns": pixels.shape[1]})


def read_reference_mask(source: str | Path | IO[bytes], *, name: str | None = None) -> ReferenceMask:
    """Read a reference mask PNG: 255 lung, 127 ignore, 0 background (0/1 masks are accepted too).

    ``source`` is a path or a binary file object (then ``name`` labels errors).
    """
    label = name or (str(source) if isinstance(source, str | Path) else "<mask bytes>")
    try:
        with Image.open(source) as img:
            arr = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{label}: cannot read mask: {exc}") from exc
    if arr.max(initial=0) <= 1:
        return ReferenceMask(arr == 1, np.zeros(arr.shape, dtype=bool))
    return ReferenceMask(arr > 191, (arr > 63) & (arr <= 191))


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write a boolean mask as an 8-bit PNG (255 lung, 0 background)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(p, compress_level=1)
    return p


def find_inputs(inputs: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Expand files and folders (recursively) into the radiographs to segment, sorted per argument.

    Folder members are kept when they are rasters or DICOM (by suffix or preamble); hidden files are
    skipped. A missing path raises ``FileNotFoundError``.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.suffix.lower() in RASTER_SUFFIXES or is_dicom(f):
                    found.append(f)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found
