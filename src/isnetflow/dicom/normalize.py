"""Pure pixel normalization: modality values -> comparable [0, 1] training images (no I/O).

The chosen pipeline (see :func:`normalize_intensity` and :func:`letterbox`):

1. **Modality LUT** (RescaleSlope/Intercept or a Modality LUT Sequence) is applied by the reader, so
   values are in the modality's physical units whatever the stored bit depth.
2. **Window**: by default a *robust percentile window* (0.5th..99.5th percentile of the image's own
   modality values) maps to [0, 1], values outside are clipped. The DICOM VOI window (WindowCenter/
   Width) is a display choice tuned per vendor and per radiologist; sites in this project differ in
   it, so using it would carry site signatures into training. The percentile window puts every site's
   image on the same footing (the body's darkest and brightest tissue span the range). ``"dicom"`` is
   available when a file's window is known to be trustworthy.

   *Approximation*: the percentiles are those of a regular sub-grid of at most 2^15 pixels (every
   k-th row and column, k = ceil(sqrt(pixels / 2^15)): k = 5 at 1024 px, 8 at 2048 px), not of every
   pixel (~0.5 ms instead of ~80 ms for a 2048 px image). On the two real CR files the result is
   identical; on synthetic images each limit is typically within 0.2% of the window width, at worst
   ~3% where the 99.5th percentile falls in the gap between tissue and burned-in text (a handful of
   bright pixels decide it). ``tests/unit/dicom/test_dicom_normalize.py`` holds it to 5%.
3. **Polarity**: MONOCHROME1 (high stored value = dark) is inverted so that, everywhere, bright = dense
   (bone, mediastinum) and dark = air (lungs, outside the body).
4. **Aspect**: the image is padded to a square with 0 (air: dark) centred on the image, then resized
   with an antialiasing filter. The padding and scale are recorded in a :class:`Letterbox` so a mask or
   heatmap at training size can be mapped back to the original pixel grid (:func:`unletterbox`).

:func:`normalize_letterbox` does steps 1 (an affine modality LUT), 2, 3 and 4 in one pass over the
full-resolution pixels, writing straight into the padded square (no intermediate float image, no
second copy for the padding): what the validate stage uses. It equals :func:`normalize_intensity`
followed by :func:`letterbox` up to float32 rounding (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

__all__ = [
    "Letterbox",
    "WindowMethod",
    "from_uint16",
    "intensity_window",
    "letterbox",
    "normalize_intensity",
    "normalize_letterbox",
    "to_uint16",
    "unletterbox",
]

WindowMethod = Literal["percentile", "dicom"]

#: Percentiles are estimated on at most this many pixels (a regular sub-grid): exact enough, fast.
_PERCENTILE_SAMPLES = 1 << 15


def _robust_sample(values: np.ndarray) -> np.ndarray:
    """A regular sub-grid of at most ~``_PERCENTILE_SAMPLES`` pixels (a view for 2-D input)."""
    step = max(1, int(np.ceil(np.sqrt(values.size / _PERCENTILE_SAMPLES))))
    return values[::step, ::step] if values.ndim == 2 else values.reshape(-1)[:: step * step]


def intensity_window(
    values: np.ndarray,
    *,
    method: WindowMethod = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
    window_center: float | None = None,
    window_width: float | None = None,
) -> tuple[float, float]:
    """The (low, high) modality values mapped to 0 and 1.

    ``"dicom"`` uses the DICOM linear VOI function's limits (PS3.3 C.11.2.1.2:
    ``c - 0.5 - (w - 1) / 2`` .. ``c - 0.5 + (w - 1) / 2``) when a usable window is given and otherwise
    falls back to ``"percentile"``.
    """
    if method == "dicom":
        voi = _dicom_window(window_center, window_width)
        if voi is not None:
            return voi
    return _percentile_window(_robust_sample(values), percentiles)


def _dicom_window(center: float | None, width: float | None) -> tuple[float, float] | None:
    """The DICOM linear VOI limits, or None when the window is missing or unusable."""
    if center is None or width is None or not width >= 1:
        return None
    c, w = float(center), float(width)
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    return (lo, hi) if hi > lo else None


def _percentile_window(sample: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    lo, hi = np.percentile(sample, percentiles)
    return float(lo), float(hi)


def normalize_intensity(
    values: np.ndarray,
    *,
    photometric: str,
    method: WindowMethod = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
    window_center: float | None = None,
    window_width: float | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Window ``values`` (modality units, 2-D) into float32 [0, 1] with bright = dense.

    ``window`` (low, high), when given, is used as is (e.g. computed once by the caller with
    :func:`intensity_window`); otherwise it is computed from ``method``. Returns the image and the
    window used. A degenerate window (high == low) yields an all-zero image; callers are expected to
    have rejected constant images before (see ``checks.check_pixels``).
    """
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {values.shape}")
    lo, hi = window or intensity_window(
        values,
        method=method,
        percentiles=percentiles,
        window_center=window_center,
        window_width=window_width,
    )
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        out = np.zeros(values.shape, dtype=np.float32)
    else:
        out = (values.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(1.0 / span)
        np.clip(out, 0.0, 1.0, out=out)
    if photometric.strip().upper() == "MONOCHROME1":
        out = np.float32(1.0) - out
    return out.astype(np.float32, copy=False), (lo, hi)


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``rows`` x ``columns`` was padded to a square and resized to ``size``.

    Padding is in original pixels: the padded square has side ``max(rows, columns)`` and the image sits
    at ``[pad_top : pad_top + rows, pad_left : pad_left + columns]``. ``scale`` = ``size / side``.
    """

    rows: int
    columns: int
    size: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int

    @property
    def side(self) -> int:
        """Side of the padded square in original pixels: ``max(rows, columns)``."""
        return max(self.rows, self.columns)

    @property
    def scale(self) -> float:
        """Resize factor from the padded square to ``size``: ``size / side``."""
        return self.size / self.side

    def to_dict(self) -> dict[str, Any]:
        """Flat dict (manifest columns) including ``scale``."""
        return {**asdict(self), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Letterbox:
        """Inverse of :meth:`to_dict` (extra keys such as ``scale`` are ignored)."""
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})

    @classmethod
    def for_shape(cls, rows: int, columns: int, size: int) -> Letterbox:
        """Centred square padding for a ``rows`` x ``columns`` image."""
        side = max(rows, columns)
        dr, dc = side - rows, side - columns
        return cls(rows, columns, size, dr // 2, dr - dr // 2, dc // 2, dc - dc // 2)


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
}


def _float_image(image: np.ndarray) -> Image.Image:
    """A Pillow "F" image of a C-contiguous float32 array, sharing its memory when possible.

    ``Image.fromarray`` copies "F" data into a newly allocated, zero-filled Pillow block; for a 1024 px
    image that measured ~5 ms more than wrapping the buffer (on the shared development VM: more than
    the resize itself). ``Image.core.map_buffer`` (what ``Image.frombuffer`` does for the modes it
    maps) wraps the array's buffer instead, read-only, keeping the array alive.
    """
    h, w = image.shape
    try:
        im = Image.new("F", (0, 0))._new(Image.core.map_buffer(image, (w, h), "raw", 0, ("F", 0, 1)))
        if im.size == (w, h) and im.mode == "F":
            im.readonly = 1
            return im
    except Exception:  # a Pillow without map_buffer for "F": fall back to the copy
        pass
    return Image.fromarray(image)


def _resize(image: np.ndarray, shape: tuple[int, int], resample: str) -> np.ndarray:
    rows, cols = shape
    if image.shape == shape:
        return image
    if image.dtype == np.bool_ or resample == "nearest":
        src = image.astype(np.uint8) if image.dtype == np.bool_ else image
        out = np.asarray(Image.fromarray(src).resize((cols, rows), Image.Resampling.NEAREST))
        return out.astype(image.dtype)
    f = _float_image(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(f.resize((cols, rows), _RESAMPLE[resample]), dtype=np.float32)


def letterbox(
    image: np.ndarray, size: int, *, pad_value: float = 0.0, resample: str = "bilinear"
) -> tuple[np.ndarray, Letterbox]:
    """Pad ``image`` (2-D) to a centred square with ``pad_value`` and resize it to ``size`` x ``size``.

    Downscaling is antialiased (Pillow's convolution resize scales the filter support). Use
    ``resample="nearest"`` for label masks.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    box = Letterbox.for_shape(image.shape[0], image.shape[1], size)
    if image.shape == (size, size):
        return image, box
    padded = np.pad(
        image,
        ((box.pad_top, box.pad_bottom), (box.pad_left, box.pad_right)),
        mode="constant",
        constant_values=pad_value,
    )
    return _resize(padded, (size, size), resample), box


def normalize_letterbox(
    pixels: np.ndarray,
    *,
    window: tuple[float, float],
    photometric: str,
    size: int | None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> tuple[np.ndarray, Letterbox | None]:
    """``letterbox(normalize_intensity(pixels * slope + intercept, window=window), size)`` in one pass.

    ``pixels`` are stored values (any real dtype; a read-only view is fine) and ``slope`` /
    ``intercept`` the affine modality LUT (1, 0 when ``pixels`` are modality values already). The
    window and the MONOCHROME1 inversion fold into one affine map ``a * x + b`` that is written,
    clipped, straight into the zero-padded square, which is then resized like :func:`letterbox` does
    (Pillow, float32, antialiased bilinear). With ``size=None`` the full-resolution image is returned
    (no padding) and the letterbox is None. Results equal the two-step computation within float32
    rounding (~1e-6).
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    lo, hi = window
    span = hi - lo
    mono1 = photometric.strip().upper() == "MONOCHROME1"
    if not np.isfinite(span) or span <= 0:
        a, b = 0.0, 1.0 if mono1 else 0.0  # like normalize_intensity: zeros, inverted for MONOCHROME1
    else:
        a, b = slope / span, (intercept - lo) / span
        if mono1:
            a, b = -a, 1.0 - b
    rows, cols = pixels.shape
    box = None if size is None else Letterbox.for_shape(rows, cols, size)
    if box is None:
        canvas = np.empty((rows, cols), dtype=np.float32)
        region = canvas
    else:
        canvas = np.zeros((box.side, box.side), dtype=np.float32)
        region = canvas[box.pad_top : box.pad_top + rows, box.pad_left : box.pad_left + cols]
    np.multiply(pixels, np.float32(a), out=region, dtype=np.float32, casting="unsafe")
    if b:
        np.add(region, np.float32(b), out=region)
    np.clip(region, 0.0, 1.0, out=region)
    if box is None or canvas.shape == (box.size, box.size):
        return canvas, box
    return _resize(canvas, (box.size, box.size), "bilinear"), box


def unletterbox(image: np.ndarray, box: Letterbox, *, resample: str = "nearest") -> np.ndarray:
    """Map a ``size`` x ``size`` array (mask, heatmap) back to the original ``rows`` x ``columns`` grid."""
    if image.shape != (box.size, box.size):
        raise ValueError(f"expected shape {(box.size, box.size)}, got {image.shape}")
    square = _resize(image, (box.side, box.side), resample)
    return square[box.pad_top : box.pad_top + box.rows, box.pad_left : box.pad_left + box.columns].copy()


def to_uint16(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint16 (0..65535), the storage format of normalized images."""
    return np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)


def from_uint16(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_uint16`: float32 in [0, 1]."""
    return stored.astype(np.float32) * np.float32(1.0 / 65535.0)
