"""Overlay previews and a gallery grid of lung masks (Pillow only: fast, no figure machinery)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = ["GalleryTile", "overlay", "write_gallery"]

_LUNG = np.array([255, 64, 64], dtype=np.float32)
_REFERENCE = np.array([64, 255, 64], dtype=np.uint8)
_IGNORE = np.array([80, 120, 255], dtype=np.float32)


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=max(1, width))


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    *,
    alpha: float = 0.35,
) -> np.ndarray:
    """RGB uint8 preview: the image in gray, ``mask`` tinted red with a red contour, an optional
    ``reference`` mask as a green contour and ``ignore`` pixels tinted blue. Arrays share one shape."""
    if mask.shape != image.shape:
        raise ValueError(f"mask {mask.shape} and image {image.shape} differ in shape")
    gray = np.clip(image, 0, 1).astype(np.float32) * 255.0
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    m = mask.astype(bool)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * _LUNG
    if ignore is not None:
        ig = ignore.astype(bool)
        rgb[ig] = 0.5 * rgb[ig] + 0.5 * _IGNORE
    width = max(1, max(image.shape) // 256)
    rgb[_edge(m, width)] = _LUNG
    out = rgb.astype(np.uint8)
    if reference is not None:
        out[_edge(reference.astype(bool), width)] = _REFERENCE
    return out


@dataclass
class GalleryTile:
    """One gallery cell: an RGB preview, a caption and whether it passed QC (red frame if not)."""

    rgb: np.ndarray
    caption: str
    passed: bool = True


def write_gallery(
    tiles: Sequence[GalleryTile], path: str | Path, *, columns: int = 8, tile: int = 192, title: str = ""
) -> Path:
    """Write a grid of tiles (letterboxed to ``tile`` px, caption below) as a PNG."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    caption_h = 28
    head = 24 if title else 0
    sheet = Image.new("RGB", (columns * tile, head + rows * (tile + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    if title:
        draw.text((6, 5), title, fill=(240, 240, 240), font=ImageFont.load_default(size=14))
    for i, t in enumerate(tiles):
        img = Image.fromarray(t.rgb)
        img.thumbnail((tile - 4, tile - 4), Image.Resampling.BILINEAR)
        x0 = (i % columns) * tile
        y0 = head + (i // columns) * (tile + caption_h)
        sheet.paste(img, (x0 + (tile - img.width) // 2, y0 + (tile - img.height) // 2))
        if not t.passed:
            draw.rectangle((x0 + 1, y0 + 1, x0 + tile - 2, y0 + tile - 2), outline=(255, 40, 40), width=3)
        for k, line in enumerate(t.caption.splitlines()[:2]):
            draw.text((x0 + 4, y0 + tile + 1 + 13 * k), line[:34], fill=(220, 220, 220), font=font)
    sheet.save(p, optimize=False, compress_level=3)
    return p
