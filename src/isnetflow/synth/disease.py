"""Disease painters: a registry from class name to a function that adds findings inside the lungs.

Every painter returns an attenuation increment that is zero outside the lungs (it is multiplied by the
soft lung mask), so the disease signal lives only where the ISNet is allowed to look. ``difficulty``
in [0, 1] lowers contrast and lesion count; ``severity`` (drawn per image) makes some positives faint,
so even a perfect lung-only model stays below AUC 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .anatomy import Rendered

__all__ = ["PAINTERS", "Painter", "paint"]

Painter = Callable[[Rendered, np.random.Generator, float, float], np.ndarray]


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _sample_lung_points(
    r: Rendered, rng: np.random.Generator, k: int, *, periphery: float, lower: float
) -> np.ndarray:
    """Pick ``k`` pixel coordinates inside the lungs, weighted towards the periphery / lower zones."""
    ys, xs = np.nonzero(r.lung)
    if ys.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    w = 1.0 + periphery * r.lung_depth[ys, xs] ** 2 + lower * r.lung_height[ys, xs] ** 2
    idx = rng.choice(ys.size, size=k, replace=True, p=w / w.sum())
    return np.stack([ys[idx], xs[idx]], axis=1)


def _blobs(
    r: Rendered,
    rng: np.random.Generator,
    centers: np.ndarray,
    radius: tuple[float, float],
    amplitude: float,
    patchy: float,
) -> np.ndarray:
    rows, cols = r.lung.shape
    out = np.zeros((rows, cols), dtype=np.float32)
    yy = np.arange(rows, dtype=np.float32)[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :]
    for cy, cx in centers:
        rad = rng.uniform(*radius) * rows
        ry, rx = rad * rng.uniform(0.7, 1.3), rad * rng.uniform(0.7, 1.3)
        # Bounding box only: keeps the cost proportional to the lesion, not the image.
        y0, y1 = max(0, int(cy - 3 * ry)), min(rows, int(cy + 3 * ry) + 1)
        x0, x1 = max(0, int(cx - 3 * rx)), min(cols, int(cx + 3 * rx) + 1)
        g = np.exp(-0.5 * (((yy[y0:y1] - cy) / ry) ** 2 + ((xx[:, x0:x1] - cx) / rx) ** 2))
        out[y0:y1, x0:x1] += amplitude * rng.uniform(0.6, 1.3) * g
    if patchy > 0:
        # Ground-glass mottling: modulate with coarse noise so lesions are patchy, not smooth discs.
        coarse = rng.uniform(1 - patchy, 1.0, size=(rows // 6 + 2, cols // 6 + 2)).astype(np.float32)
        out *= np.kron(coarse, np.ones((6, 6), dtype=np.float32))[:rows, :cols]
    return out


def covid(r: Rendered, rng: np.random.Generator, difficulty: float, severity: float) -> np.ndarray:
    """Bilateral, peripheral, lower-zone patchy ground-glass opacities."""
    k = round(_lerp(7, 2, difficulty) * (0.5 + severity)) + 1
    amp = _lerp(0.2, 0.06, difficulty) * (0.35 + 1.3 * severity)
    centers = _sample_lung_points(r, rng, k, periphery=4.0, lower=3.0)
    return _blobs(r, rng, centers, (0.035, 0.075), amp, patchy=0.5) * r.lung_soft


def pneumonia(r: Rendered, rng: np.random.Generator, difficulty: float, severity: float) -> np.ndarray:
    """Unilateral lobar consolidation: one dense, larger region in a lower zone."""
    amp = _lerp(0.26, 0.08, difficulty) * (0.4 + 1.2 * severity)
    centers = _sample_lung_points(r, rng, 1, periphery=1.0, lower=6.0)
    core = _blobs(r, rng, centers, (0.08, 0.12), amp, patchy=0.15)
    return np.minimum(core, amp) * r.lung_soft


def normal(r: Rendered, rng: np.random.Generator, difficulty: float, severity: float) -> np.ndarray:
    """No finding."""
    return np.zeros(r.lung.shape, dtype=np.float32)


PAINTERS: dict[str, Painter] = {"normal": normal, "covid": covid, "pneumonia": pneumonia}


def paint(name: str, r: Rendered, rng: np.random.Generator, difficulty: float, severity: float) -> np.ndarray:
    """The attenuation increment of class ``name``'s painter (:data:`PAINTERS`) for image ``r``."""
    try:
        painter = PAINTERS[name]
    except KeyError:
        raise ValueError(f"unknown class {name!r}; known: {sorted(PAINTERS)}") from None
    return painter(r, rng, difficulty, severity)
