"""Background cues: what hospitals burn into radiographs outside the lungs.

Two registries of painters working on the *presentation* image ``p`` (float32 in [0, 1], bright =
dense, before quantization and before MONOCHROME1 inversion):

* :data:`CUES` — site signatures (burned-in text, laterality markers, rulers, ECG devices, border
  shading, collimation). They identify the site, not the label.
* :data:`SHORTCUTS` — the planted label-correlated cue (a "PORTABLE" tag by default).

Every painter receives ``allowed`` (True where drawing is permitted: outside the dilated lung mask)
and must only change pixels there, so all cues are background by construction — exactly what an ISNet
must learn to ignore. Painters return the boolean footprint they drew.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["CUES", "SHORTCUTS", "CuePainter", "draw_cue", "draw_shortcut", "text_bitmap"]

CuePainter = Callable[[np.ndarray, np.ndarray, np.random.Generator, str], np.ndarray]


def _stable(text: str) -> int:
    """Process-independent hash (the builtin ``hash`` of str is salted per process)."""
    return zlib.crc32(text.encode())


@lru_cache(maxsize=256)
def text_bitmap(text: str, height_px: int) -> np.ndarray:
    """Boolean bitmap of ``text`` rendered with Pillow's bundled FreeType font, ``height_px`` tall."""
    height_px = max(6, int(height_px))
    font = ImageFont.load_default(size=height_px)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, int(right - left) + 2), max(1, int(bottom - top) + 2)), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=255, font=font)
    return np.asarray(img) > 96


def _stamp(
    p: np.ndarray, allowed: np.ndarray, bitmap: np.ndarray, y: int, x: int, value: float
) -> np.ndarray:
    """Write ``value`` where ``bitmap`` is set, at top-left (y, x), clipped to the image and ``allowed``."""
    rows, cols = p.shape
    fp = np.zeros((rows, cols), dtype=bool)
    h, w = bitmap.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(rows, y + h), min(cols, x + w)
    if y1 <= y0 or x1 <= x0:
        return fp
    sub = bitmap[y0 - y : y1 - y, x0 - x : x1 - x] & allowed[y0:y1, x0:x1]
    fp[y0:y1, x0:x1] = sub
    p[fp] = value
    return fp


def _corner(rows: int, cols: int, h: int, w: int, corner: str, rng: np.random.Generator) -> tuple[int, int]:
    my, mx = int(rows * rng.uniform(0.02, 0.05)), int(cols * rng.uniform(0.02, 0.06))
    y = my if corner[0] == "t" else rows - h - my
    x = mx if corner[1] == "l" else cols - w - mx
    return y, x


# ---------------------------------------------------------------------------- site signature cues


def cue_text(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """Burned-in institution text and an acquisition-date-like string in a bottom corner."""
    rows, cols = p.shape
    h = max(7, int(rows * 0.035))
    line1 = text_bitmap(text or "HOSPITAL", h)
    line2 = text_bitmap(f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.20{rng.integers(10, 26)}", h)
    corner = "bl" if (_stable(text) % 2 == 0) else "br"
    y, x = _corner(rows, cols, 2 * h + 4, line1.shape[1], corner, rng)
    fp = _stamp(p, allowed, line1, y, x, 1.0)
    fp |= _stamp(p, allowed, line2, y + h + 3, x, 1.0)
    return fp


def cue_laterality(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A lead laterality marker ("L" in a box, or "R") in an upper corner, as placed by radiographers."""
    rows, cols = p.shape
    h = max(8, int(rows * 0.06))
    letter = "L" if _stable(text) % 3 else "R"
    glyph = text_bitmap(letter, h)
    box = np.zeros((glyph.shape[0] + 6, glyph.shape[1] + 6), dtype=bool)
    box[[0, 1, -2, -1], :] = True
    box[:, [0, 1, -2, -1]] = True
    box[3 : 3 + glyph.shape[0], 3 : 3 + glyph.shape[1]] |= glyph
    corner = "tr" if letter == "L" else "tl"
    y, x = _corner(rows, cols, box.shape[0], box.shape[1], corner, rng)
    return _stamp(p, allowed, box, y, x, 1.0)


def cue_ruler(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A radiopaque ruler along one side edge with regular ticks."""
    rows, cols = p.shape
    w = max(3, cols // 60)
    length = int(rows * rng.uniform(0.5, 0.8))
    y0 = int(rng.uniform(0.05, 0.95) * (rows - length))
    bmp = np.zeros((length, 3 * w), dtype=bool)
    bmp[:, :w] = True
    step = max(4, rows // 40)
    for i in range(0, length, step):
        bmp[i : i + max(1, w // 2), : (3 * w if (i // step) % 5 == 0 else 2 * w)] = True
    x = 2 if _stable(text) % 2 else cols - 3 * w - 2
    if x > 2:
        bmp = bmp[:, ::-1]
    return _stamp(p, allowed, bmp, y0, x, 0.97)


def cue_device(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """ECG electrodes (bright rings) near the shoulders / flanks with their lead wires."""
    rows, cols = p.shape
    fp = np.zeros((rows, cols), dtype=bool)
    yy, xx = np.ogrid[:rows, :cols]
    r_out = max(3.0, rows * 0.022)
    for _ in range(int(rng.integers(2, 5))):
        cy = rng.uniform(0.04, 0.96) * rows
        cx = (rng.uniform(0.03, 0.14) if rng.random() < 0.5 else rng.uniform(0.86, 0.97)) * cols
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        ring = (d < r_out) & (d > 0.45 * r_out)
        # Lead wire: a sagging curve towards the image edge.
        t = np.linspace(0, 1, 4 * rows)
        ex = 0 if cx < cols / 2 else cols - 1
        wy = cy + (rows * 0.3) * t * (1 - t) + t * rng.uniform(-0.1, 0.2) * rows
        wx = cx + (ex - cx) * t
        ok = (wy >= 0) & (wy < rows)
        wire = np.zeros((rows, cols), dtype=bool)
        wire[wy[ok].astype(int), np.clip(wx[ok].astype(int), 0, cols - 1)] = True
        shape = (ring | wire) & allowed
        p[shape] = np.maximum(p[shape], 0.9)
        fp |= shape
    return fp


def cue_border(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """Site-specific border shading (heel effect / vignetting band) outside the lungs."""
    rows, cols = p.shape
    width = max(4, int(min(rows, cols) * rng.uniform(0.04, 0.07)))
    yy, xx = np.ogrid[:rows, :cols]
    dist = np.minimum(np.minimum(yy, rows - 1 - yy), np.minimum(xx, cols - 1 - xx)).astype(np.float32)
    band = np.clip(1.0 - dist / width, 0.0, 1.0) * allowed
    p -= 0.35 * band * p
    return band > 0


def cue_collimator(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """Collimation: unexposed (bright) margins outside a rectangular beam field."""
    rows, cols = p.shape
    t, b = int(rows * rng.uniform(0.0, 0.03)), int(rows * rng.uniform(0.0, 0.04))
    lft, rgt = int(cols * rng.uniform(0.02, 0.06)), int(cols * rng.uniform(0.02, 0.06))
    field = np.zeros((rows, cols), dtype=bool)
    field[t : rows - b, lft : cols - rgt] = True
    fp = ~field & allowed
    p[fp] = 0.82 + 0.05 * p[fp]
    return fp


CUES: dict[str, CuePainter] = {
    "text": cue_text,
    "laterality": cue_laterality,
    "ruler": cue_ruler,
    "device": cue_device,
    "border": cue_border,
    "collimator": cue_collimator,
}


# ------------------------------------------------------------------------------- planted shortcuts


def shortcut_tag(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A bright badge with dark lettering (e.g. "PORTABLE") in an upper corner, position jittered."""
    rows, cols = p.shape
    h = max(7, int(rows * rng.uniform(0.04, 0.05)))
    glyph = text_bitmap(text, h)
    pad = max(2, h // 3)
    badge = np.ones((glyph.shape[0] + 2 * pad, glyph.shape[1] + 2 * pad), dtype=bool)
    corner = "tl" if rng.random() < 0.5 else "tr"
    y, x = _corner(rows, cols, badge.shape[0], badge.shape[1], corner, rng)
    fp = _stamp(p, allowed, badge, y, x, 0.96)
    inner = np.zeros_like(badge)
    inner[pad : pad + glyph.shape[0], pad : pad + glyph.shape[1]] = glyph
    _stamp(p, allowed, inner, y, x, 0.25)
    return fp


def shortcut_marker(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A bright disc with a dark ring (coin-like marker) in an upper corner region."""
    rows, cols = p.shape
    r = max(4.0, rows * 0.03)
    cy = rng.uniform(0.04, 0.1) * rows
    cx = (rng.uniform(0.05, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 0.95)) * cols
    yy, xx = np.ogrid[:rows, :cols]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    disc = (d < r) & allowed
    ring = (d >= 0.55 * r) & (d < 0.75 * r) & allowed
    p[disc] = 0.97
    p[ring] = 0.2
    return disc


def shortcut_text(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """The word alone, burned in white in an upper corner."""
    rows, cols = p.shape
    glyph = text_bitmap(text, max(7, int(rows * 0.045)))
    y, x = _corner(rows, cols, glyph.shape[0], glyph.shape[1], "tl" if rng.random() < 0.5 else "tr", rng)
    return _stamp(p, allowed, glyph, y, x, 1.0)


def shortcut_border(p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A thin bright frame around the image (e.g. a different printer / export path)."""
    rows, cols = p.shape
    w = max(2, rows // 64)
    frame = np.zeros((rows, cols), dtype=bool)
    frame[:w], frame[-w:], frame[:, :w], frame[:, -w:] = True, True, True, True
    frame &= allowed
    p[frame] = 0.95
    return frame


SHORTCUTS: dict[str, CuePainter] = {
    "tag": shortcut_tag,
    "marker": shortcut_marker,
    "text": shortcut_text,
    "border": shortcut_border,
}


def _lookup(registry: dict[str, CuePainter], name: str, what: str) -> CuePainter:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(registry)}") from None


def draw_cue(
    name: str, p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str
) -> np.ndarray:
    return _lookup(CUES, name, "cue")(p, allowed, rng, text)


def draw_shortcut(
    name: str, p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str
) -> np.ndarray:
    return _lookup(SHORTCUTS, name, "shortcut kind")(p, allowed, rng, text)
