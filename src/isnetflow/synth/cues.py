"""Background cues: what hospitals burn into radiographs outside the lungs.

Two registries of painters working on the *presentation* image ``p`` (float32 in [0, 1], bright =
dense, before quantization and before MONOCHROME1 inversion):

* :data:`CUES` — site signatures (burned-in text, laterality markers, rulers, ECG devices, border
  shading, collimation). They identify the site, not the label.
* :data:`SHORTCUTS` — the planted label-correlated cue, one of several kinds (``synth.shortcut.kind``):
  a "PORTABLE" tag (the default), a coin marker, bare text, a thin frame, ECG electrodes with lead
  wires, a lead laterality marker, a collimation band, or an acquisition style (tone curve and noise)
  of the background. Each is drawn far from the lungs (corners and edges) or just outside them
  (``synth.shortcut.placement``).

Every painter receives ``allowed`` (True where drawing is permitted: outside the dilated lung mask)
and must only change pixels there, so all cues are background by construction — exactly what an ISNet
must learn to ignore. Painters return the boolean footprint they drew. A cue inside the lungs is out
of scope: nothing here may draw there.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "CUES",
    "PLACEMENTS",
    "SHORTCUTS",
    "CuePainter",
    "ShortcutPainter",
    "draw_cue",
    "draw_shortcut",
    "text_bitmap",
]

#: A site cue: ``(p, allowed, rng, text) -> footprint``.
CuePainter = Callable[[np.ndarray, np.ndarray, np.random.Generator, str], np.ndarray]
#: A planted shortcut: ``(p, allowed, rng, text, placement) -> footprint``, placement "far" or "near".
ShortcutPainter = Callable[[np.ndarray, np.ndarray, np.random.Generator, str, str], np.ndarray]
P = TypeVar("P")


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
#
# Shortcut painters take one more argument than the site cues: ``placement``. "far" puts the cue at
# the image corners and edges; "near" puts it just outside the (dilated) lung mask, beside a lung's
# lateral border, above an apex or below a base (never between the lungs).


def _lung_distance(allowed: np.ndarray) -> np.ndarray:
    """Euclidean distance of every allowed pixel to the nearest forbidden (dilated-lung) pixel."""
    return np.asarray(ndimage.distance_transform_edt(allowed), dtype=np.float32)


def _near_gap(rows: int) -> int:
    """How far outside the dilated lung mask a "near" cue may start: a few pixels."""
    return max(2, rows // 40)


def _near_box(
    allowed: np.ndarray, h: int, w: int, rng: np.random.Generator, taken: np.ndarray | None = None
) -> tuple[int, int] | None:
    """Top-left corner of an ``h`` x ``w`` box inside ``allowed``, hugging the lungs.

    Candidates lie entirely in ``allowed`` and off ``taken`` (earlier parts of the same cue), and do not
    have their centre between the two lungs (the mediastinum); among them, one is drawn from those whose
    mean distance to the dilated lung mask is within :func:`_near_gap` pixels of the smallest. None when
    nothing fits (or there are no lungs)."""
    rows, cols = allowed.shape
    lung = ~allowed
    if not lung.any() or h > rows or w > cols:
        return None

    def box_sums(a: np.ndarray) -> np.ndarray:
        table = np.zeros((rows + 1, cols + 1), dtype=np.float64)
        table[1:, 1:] = a.cumsum(0).cumsum(1)
        return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]

    fits = box_sums((lung if taken is None else lung | taken).astype(np.float64)) < 0.5
    left = np.maximum.accumulate(lung, axis=1)
    right = np.maximum.accumulate(lung[:, ::-1], axis=1)[:, ::-1]
    between = (left & right & allowed)[h // 2 : rows - h + 1 + h // 2, w // 2 : cols - w + 1 + w // 2]
    ok = fits & ~between
    if not ok.any():
        return None
    score = box_sums(_lung_distance(allowed).astype(np.float64)) / (h * w)
    best = np.flatnonzero(ok & (score <= score[ok].min() + _near_gap(rows)))
    k = int(best[rng.integers(best.size)])
    return k // ok.shape[1], k % ok.shape[1]


def _place(
    allowed: np.ndarray,
    h: int,
    w: int,
    rng: np.random.Generator,
    placement: str,
    corners: str = "tl tr",
    taken: np.ndarray | None = None,
) -> tuple[int, int]:
    """Top-left corner for an ``h`` x ``w`` cue: near the lungs, or in one of ``corners``."""
    if placement == "near":
        at = _near_box(allowed, h, w, rng, taken)
        if at is not None:
            return at
    options = corners.split()
    corner = options[int(rng.integers(len(options)))]
    rows, cols = allowed.shape
    return _corner(rows, cols, h, w, corner, rng)


def shortcut_tag(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """A bright badge with dark lettering (e.g. "PORTABLE"): in an upper corner, position jittered
    (far), or just outside a lung (near)."""
    rows, cols = p.shape
    h = max(7, int(rows * rng.uniform(0.04, 0.05)))
    glyph = text_bitmap(text, h)
    pad = max(2, h // 3)
    badge = np.ones((glyph.shape[0] + 2 * pad, glyph.shape[1] + 2 * pad), dtype=bool)
    if placement == "near":
        y, x = _place(allowed, badge.shape[0], badge.shape[1], rng, placement)
    else:
        corner = "tl" if rng.random() < 0.5 else "tr"
        y, x = _corner(rows, cols, badge.shape[0], badge.shape[1], corner, rng)
    fp = _stamp(p, allowed, badge, y, x, 0.96)
    inner = np.zeros_like(badge)
    inner[pad : pad + glyph.shape[0], pad : pad + glyph.shape[1]] = glyph
    _stamp(p, allowed, inner, y, x, 0.25)
    return fp


def shortcut_marker(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """A bright disc with a dark ring (coin-like marker): upper corner region (far) or beside a lung."""
    rows, cols = p.shape
    r = max(4.0, rows * 0.03)
    if placement == "near":
        side = int(np.ceil(2 * r)) + 1
        y, x = _place(allowed, side, side, rng, placement)
        cy, cx = y + side / 2, x + side / 2
    else:
        cy = rng.uniform(0.04, 0.1) * rows
        cx = (rng.uniform(0.05, 0.2) if rng.random() < 0.5 else rng.uniform(0.8, 0.95)) * cols
    yy, xx = np.ogrid[:rows, :cols]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    disc = (d < r) & allowed
    ring = (d >= 0.55 * r) & (d < 0.75 * r) & allowed
    p[disc] = 0.97
    p[ring] = 0.2
    return disc


def shortcut_text(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """The word alone, burned in white: upper corner (far) or just outside a lung (near)."""
    rows, cols = p.shape
    glyph = text_bitmap(text, max(7, int(rows * 0.045)))
    if placement == "near":
        y, x = _place(allowed, glyph.shape[0], glyph.shape[1], rng, placement)
    else:
        y, x = _corner(rows, cols, glyph.shape[0], glyph.shape[1], "tl" if rng.random() < 0.5 else "tr", rng)
    return _stamp(p, allowed, glyph, y, x, 1.0)


def shortcut_border(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """A thin bright frame: around the image (far, e.g. another printer / export path) or around the
    lungs, just outside the dilated lung mask (near, e.g. a burned-in contour overlay)."""
    rows, cols = p.shape
    w = max(2, rows // 64)
    if placement == "near" and not allowed.all():
        frame = allowed & (_lung_distance(allowed) <= w)
    else:
        frame = np.zeros((rows, cols), dtype=bool)
        frame[:w], frame[-w:], frame[:, :w], frame[:, -w:] = True, True, True, True
        frame &= allowed
    p[frame] = 0.95
    return frame


def _electrode(s: int) -> tuple[np.ndarray, np.ndarray]:
    """A square adhesive ECG pad, ``s`` px wide: (whole pad, its bright outline and central snap)."""
    pad = np.ones((s, s), dtype=bool)
    bright = np.zeros_like(pad)
    t = max(1, s // 6)
    bright[:t], bright[-t:], bright[:, :t], bright[:, -t:] = True, True, True, True
    yy, xx = np.ogrid[:s, :s]
    bright |= (yy - (s - 1) / 2) ** 2 + (xx - (s - 1) / 2) ** 2 <= (s / 5) ** 2
    return pad, bright


def shortcut_device(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """Two or three square ECG electrode pads (grey pad, bright rim, bright central snap) with thick
    lead wires. Far: pads at the shoulders near the lateral image edges, wires up to the top edge. Near:
    pads just outside a lung, wires sideways to the nearer lateral edge. Unlike the sites' electrodes
    (thin rings with a hair-thin wire) these are solid squares with two-pixel wires."""
    rows, cols = p.shape
    s = max(5, int(rows * 0.05))
    pad, bright = _electrode(s)
    fp = np.zeros((rows, cols), dtype=bool)
    wire = np.zeros((rows, cols), dtype=bool)
    t = np.linspace(0.0, 1.0, 4 * max(rows, cols))
    taken = np.zeros((rows, cols), dtype=bool)  # near: pads keep a pad's width apart
    for _ in range(int(rng.integers(2, 4))):
        if placement == "near":
            y, x = _place(allowed, s, s, rng, placement, taken=taken)
            taken[max(0, y - s) : y + 2 * s, max(0, x - s) : x + 2 * s] = True
        else:
            y = int(rng.uniform(0.15, 0.35) * rows)
            x = int(
                (rng.uniform(0.03, 0.12) if rng.random() < 0.5 else rng.uniform(0.88, 0.97)) * cols - s / 2
            )
        cy, cx = y + s / 2, x + s / 2
        if placement == "near":  # sideways to the nearer lateral edge, sagging a little
            ex = 0.0 if cx < cols / 2 else cols - 1.0
            wy = cy + rows * rng.uniform(0.05, 0.15) * t * (1 - t)
            wx = cx + (ex - cx) * t
        else:  # up to the top edge, bowing sideways
            wy = cy * (1 - t)
            wx = cx + cols * rng.uniform(-0.08, 0.08) * t * (1 - t)
        ok = (wy >= 0) & (wy < rows) & (wx >= 0) & (wx < cols)
        wire[wy[ok].astype(int), wx[ok].astype(int)] = True
        fp |= _stamp(p, allowed, pad, y, x, 0.7)
        _stamp(p, allowed, bright, y, x, 0.98)
    wire = ndimage.binary_dilation(wire, iterations=1) & allowed & ~fp
    p[wire] = np.maximum(p[wire], 0.92)
    return fp | wire


def shortcut_laterality(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """A lead laterality marker: a solid bright square with a dark "L" or "R" cut out and a dark inner
    frame (the sites' own markers are a bright outline around a bright letter). Far: an upper corner,
    below the sites' markers; near: just outside a lung."""
    rows, cols = p.shape
    h = max(7, int(rows * 0.06))
    glyph = text_bitmap("L" if rng.random() < 0.5 else "R", h)
    m = max(2, h // 4)
    box = np.ones((glyph.shape[0] + 2 * m, glyph.shape[1] + 2 * m), dtype=bool)
    dark = np.zeros_like(box)
    dark[1:-1, 1:-1] = True
    dark[2:-2, 2:-2] = False
    dark[m : m + glyph.shape[0], m : m + glyph.shape[1]] |= glyph
    if placement == "near":
        y, x = _place(allowed, box.shape[0], box.shape[1], rng, placement)
    else:  # an upper corner, below where the sites put their own markers
        y, x = _corner(rows, cols, box.shape[0], box.shape[1], "tl" if rng.random() < 0.5 else "tr", rng)
        y += int(rows * rng.uniform(0.1, 0.16))
    fp = _stamp(p, allowed, box, y, x, 0.95)
    _stamp(p, allowed, dark, y, x, 0.12)
    return fp


def shortcut_band(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """A collimation band: a bright (unexposed) strip with a dark shutter-edge line on its inner side.
    Far: along the top edge and, each with probability 1/2, the left and right edges. Near: a straight
    vertical strip beside one or both lungs' lateral borders, a few pixels outside the dilated mask,
    as long as the lung is tall (a tight lateral collimation)."""
    rows, cols = p.shape
    width = max(4, int(min(rows, cols) * rng.uniform(0.05, 0.08)))
    band = np.zeros((rows, cols), dtype=bool)
    edge = np.zeros((rows, cols), dtype=bool)
    lung = ~allowed
    if placement == "near" and lung.any():
        gap = _near_gap(rows)
        lung_rows, lung_cols = np.nonzero(lung)
        top, bottom = int(lung_rows.min()), int(lung_rows.max()) + 1
        sides = [("left", "right"), ("left",), ("right",)][int(rng.integers(3))]
        for side in sides:
            if side == "left":
                x1 = int(lung_cols.min()) - gap
                x0 = x1 - width
                band[top:bottom, max(0, x0) : max(0, x1)] = True
                edge[top:bottom, max(0, x1 - 1) : max(0, x1)] = True
            else:
                x0 = int(lung_cols.max()) + 1 + gap
                band[top:bottom, min(cols, x0) : min(cols, x0 + width)] = True
                edge[top:bottom, min(cols, x0) : min(cols, x0 + 1)] = True
    else:
        band[:width] = True
        edge[width - 1] = True
        if rng.random() < 0.5:
            band[:, :width] = True
            edge[width - 1 :, width - 1] = True
        if rng.random() < 0.5:
            band[:, cols - width :] = True
            edge[width - 1 :, cols - width] = True
    band &= allowed
    edge &= band
    p[band] = 0.88 + 0.06 * p[band]
    p[edge] = 0.15
    return band


def shortcut_exposure(
    p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str, placement: str = "far"
) -> np.ndarray:
    """An acquisition style of its own outside the lungs: a harder tone curve (gamma 0.7, contrast
    x1.2) and a coarse-grained noise texture. Far: the background away from the lungs (beyond about a
    tenth of the image height from the dilated lung mask); near: the ring of tissue within that distance.
    Nothing inside the dilated lung mask changes, so the lungs keep the site's own style."""
    rows = p.shape[0]
    if allowed.all():
        region = allowed.copy()
    else:
        reach = max(4.0, 0.1 * rows)
        dist = _lung_distance(allowed)
        region = allowed & ((dist <= reach) if placement == "near" else (dist > reach))
    noise = ndimage.gaussian_filter(rng.standard_normal(p.shape).astype(np.float32), max(1.0, rows / 128))
    noise /= max(float(noise.std()), 1e-6)
    styled = np.clip(0.5 + 1.2 * (np.clip(p, 0.0, 1.0) ** 0.7 - 0.5) + 0.03 * noise, 0.0, 1.0)
    p[region] = styled[region]
    return region


SHORTCUTS: dict[str, ShortcutPainter] = {
    "tag": shortcut_tag,
    "marker": shortcut_marker,
    "text": shortcut_text,
    "border": shortcut_border,
    "device": shortcut_device,
    "laterality": shortcut_laterality,
    "band": shortcut_band,
    "exposure": shortcut_exposure,
}

PLACEMENTS = ("far", "near")


def _lookup(registry: dict[str, P], name: str, what: str) -> P:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(registry)}") from None


def draw_cue(
    name: str, p: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, text: str
) -> np.ndarray:
    """Paint the site cue ``name`` (:data:`CUES`) into ``p`` within ``allowed``; returns its footprint."""
    return _lookup(CUES, name, "cue")(p, allowed, rng, text)


def draw_shortcut(
    name: str,
    p: np.ndarray,
    allowed: np.ndarray,
    rng: np.random.Generator,
    text: str,
    placement: str = "far",
) -> np.ndarray:
    """Paint the planted shortcut ``name`` at ``placement`` ("far" or "near"); returns its footprint."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown shortcut placement {placement!r}; known: {list(PLACEMENTS)}")
    return _lookup(SHORTCUTS, name, "shortcut kind")(p, allowed, rng, text, placement)
