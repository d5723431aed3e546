"""Deterministic perturbations of (image, mask) pairs: a stand-in for radiographs from other hospitals.

The held-out real images all come from one hospital. To estimate how the segmenter transfers, each
held-out image is also evaluated after strong, *fixed* perturbations applied at the original
resolution, before the inference pipeline (so letterboxing and the way back are exercised too):

========================  ===========================================================================
``gamma_dark``/``_bright``  tone curves of other vendors (gamma 1.8 / 0.55)
``low_contrast_noise``    under-exposed, noisy detector (range squeezed to 30 %, sigma 3 % noise)
``blur``                  soft images (Gaussian sigma 0.6 % of the image side)
``sharpen``               aggressive edge enhancement (unsharp mask, amount 2)
``bias_field``            uneven exposure (smooth multiplicative field, up to x1.8)
``equalized``             histogram-equalized processing
``jpeg_lowres``           30 % resolution, JPEG quality 20, upsampled back
``zoom_out``              lungs at 60 % size in a black canvas (paediatric / wide field)
``aspect_crop``           non-square 4:5 crop that cuts lateral lung edges
``rotate``                10 degree positioning rotation
``collimation``           white shutters on all sides (masks are 0 under the shutters)
``text_markers``          burned-in text, laterality markers and a ruler-like bar
``hospital_mix``          three random photometric changes + one geometric one
========================  ===========================================================================

Masks move with geometric perturbations (nearest neighbour); the 'ignore' mask moves with them.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = ["PERTURBATIONS", "Triple", "perturb"]

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (float [0, 1]), lung (bool), ignore (bool)
Perturbation = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], Triple]


def _gamma(g: float) -> Perturbation:
    def f(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
        return np.clip(im, 0, 1) ** g, lung, ign

    return f


def _low_contrast_noise(
    im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator
) -> Triple:
    out = 0.4 + 0.3 * im + rng.normal(0.0, 0.03, im.shape)
    return np.clip(out, 0, 1), lung, ign


def _blur(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    return ndimage.gaussian_filter(im, 0.006 * max(im.shape)), lung, ign


def _sharpen(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    soft = ndimage.gaussian_filter(im, 0.004 * max(im.shape))
    return np.clip(im + 2.0 * (im - soft), 0, 1), lung, ign


def _bias_field(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    rows, cols = im.shape
    y, x = np.mgrid[0:rows, 0:cols]
    y, x = y / rows - 0.5, x / cols - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    field = np.exp(0.6 * (np.cos(angle) * x + np.sin(angle) * y) * 2 + 0.4 * (x**2 + y**2))
    return np.clip(im * field / field.mean(), 0, 1), lung, ign


def _equalized(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    q = np.clip((im * 255).astype(np.int64), 0, 255)
    cdf = np.cumsum(np.bincount(q.ravel(), minlength=256)).astype(np.float64)
    cdf /= cdf[-1]
    return cdf[q].astype(np.float32), lung, ign


def _jpeg_lowres(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    rows, cols = im.shape
    small = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8)).resize(
        (max(8, int(cols * 0.3)), max(8, int(rows * 0.3))), Image.Resampling.BILINEAR
    )
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=20)
    buf.seek(0)
    back = Image.open(buf).convert("L").resize((cols, rows), Image.Resampling.BILINEAR)
    return np.asarray(back, dtype=np.float32) / 255.0, lung, ign


def _zoom_out(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    rows, cols = im.shape
    r, c = int(rows * 0.6), int(cols * 0.6)
    top = int(rng.integers(0, rows - r + 1))
    left = int(rng.integers(0, cols - c + 1))

    def place(a: np.ndarray, order: int) -> np.ndarray:
        small = ndimage.zoom(a.astype(np.float32), (r / rows, c / cols), order=order)[:r, :c]
        canvas = np.zeros((rows, cols), dtype=np.float32)
        canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
        return canvas

    return place(im, 1), place(lung, 0) > 0.5, place(ign, 0) > 0.5


def _aspect_crop(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    cols = im.shape[1]
    keep = int(cols * 0.8)
    left = (cols - keep) // 2
    sl = (slice(None), slice(left, left + keep))
    return im[sl].copy(), lung[sl].copy(), ign[sl].copy()


def _rotate(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    angle = 10.0 * float(rng.choice([-1.0, 1.0]))

    def rot(a: np.ndarray, order: int) -> np.ndarray:
        return ndimage.rotate(
            a.astype(np.float32), angle, reshape=False, order=order, mode="constant", cval=0.0
        )

    return np.clip(rot(im, 1), 0, 1), rot(lung, 0) > 0.5, rot(ign, 0) > 0.5


def _collimation(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    rows, cols = im.shape
    band = np.zeros(im.shape, dtype=bool)
    t, b = int(rows * rng.uniform(0.04, 0.1)), int(rows * rng.uniform(0.04, 0.1))
    left, right = int(cols * rng.uniform(0.03, 0.07)), int(cols * rng.uniform(0.03, 0.07))
    band[:t], band[rows - b :], band[:, :left], band[:, cols - right :] = True, True, True, True
    out = im.copy()
    out[band] = 1.0
    return out, lung & ~band, ign & ~band


def _text_markers(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    rows, cols = im.shape
    canvas = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    big = ImageFont.load_default(size=max(10, rows // 14))
    small = ImageFont.load_default(size=max(8, rows // 40))
    draw.text((int(cols * 0.84), int(rows * 0.04)), "L", fill=255, font=big)
    draw.text((int(cols * 0.03), int(rows * 0.03)), "AP SUPINE  PORTABLE", fill=255, font=small)
    draw.text((int(cols * 0.03), int(rows * 0.92)), "2021-03-14 07:42  ICU-3  kV 90", fill=255, font=small)
    draw.rectangle((int(cols * 0.96), int(rows * 0.2), int(cols * 0.98), int(rows * 0.8)), fill=230)
    return np.asarray(canvas, dtype=np.float32) / 255.0, lung, ign


_PHOTOMETRIC: dict[str, Perturbation] = {
    "gamma_dark": _gamma(1.8),
    "gamma_bright": _gamma(0.55),
    "low_contrast_noise": _low_contrast_noise,
    "blur": _blur,
    "sharpen": _sharpen,
    "bias_field": _bias_field,
    "equalized": _equalized,
    "jpeg_lowres": _jpeg_lowres,
}
_GEOMETRIC: dict[str, Perturbation] = {
    "zoom_out": _zoom_out,
    "aspect_crop": _aspect_crop,
    "rotate": _rotate,
    "collimation": _collimation,
    "text_markers": _text_markers,
}


def _hospital_mix(im: np.ndarray, lung: np.ndarray, ign: np.ndarray, rng: np.random.Generator) -> Triple:
    names = list(_PHOTOMETRIC)
    for i in rng.choice(len(names), size=3, replace=False):
        im, lung, ign = _PHOTOMETRIC[names[int(i)]](im, lung, ign, rng)
    geo = list(_GEOMETRIC)
    return _GEOMETRIC[geo[int(rng.integers(len(geo)))]](im, lung, ign, rng)


#: Every named perturbation, in report order.
PERTURBATIONS: dict[str, Perturbation] = {**_PHOTOMETRIC, **_GEOMETRIC, "hospital_mix": _hospital_mix}


def perturb(name: str, image: np.ndarray, lung: np.ndarray, ignore: np.ndarray, seed: int = 0) -> Triple:
    """Apply perturbation ``name`` (see :data:`PERTURBATIONS`) deterministically for ``seed``."""
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; choose from {sorted(PERTURBATIONS)}")
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    im, lu, ig = PERTURBATIONS[name](image.astype(np.float32), lung.astype(bool), ignore.astype(bool), rng)
    return np.clip(im, 0.0, 1.0).astype(np.float32), lu.astype(bool), ig.astype(bool)
