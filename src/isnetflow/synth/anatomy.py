"""Chest-radiograph phantom anatomy.

A patient is a small set of random shape parameters (:class:`Anatomy`); :func:`render_anatomy` turns
them into an attenuation map (bright = dense, as on a MONOCHROME2 display) and the ground-truth lung
mask, at any resolution. All geometry is analytic in normalized coordinates (x, y in [0, 1] of the
image width / height), so the mask and the image stay aligned by construction and rendering is a
handful of vectorized numpy expressions (fast enough for >50 images/s at 256 px on one core).

Conventions: image left = patient right (standard PA display). The heart bulges into the lung on the
image right. Masks exclude the heart and mediastinum (JSRT-like convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Anatomy", "Rendered", "render_anatomy", "sample_anatomy"]


@dataclass(frozen=True)
class Anatomy:
    """Per-patient shape parameters (normalized image coordinates)."""

    cx: float  # body / spine centre
    body_half_width: float
    lung_top: float  # apex height
    lung_bottom_r: float  # costophrenic angle, patient right (image left)
    lung_bottom_l: float  # patient left (image right)
    lung_width_r: float  # lateral extent from the mediastinal border
    lung_width_l: float
    mediastinum_half_width: float
    dome_r: float  # diaphragm dome height as a fraction of lung height
    dome_l: float
    heart_cx: float
    heart_cy: float
    heart_rx: float
    heart_ry: float
    rib_spacing: float
    rib_phase: float
    rotation_deg: float
    harmonics_r: tuple[float, ...]  # lateral-border perturbation amplitudes / phases (interleaved)
    harmonics_l: tuple[float, ...]
    texture_seed: int


def sample_anatomy(rng: np.random.Generator, *, ap_view: bool = False) -> Anatomy:
    """Draw one patient's anatomy. AP (portable, supine) views: bigger heart, shallower inspiration."""
    scale = rng.uniform(0.9, 1.08)
    cx = 0.5 + rng.normal(0, 0.018)
    top = rng.uniform(0.1, 0.17)
    height = rng.uniform(0.52, 0.62) * scale * (0.93 if ap_view else 1.0)
    heart_scale = rng.uniform(0.9, 1.15) * (1.15 if ap_view else 1.0)

    def harm() -> tuple[float, ...]:
        amps = rng.normal(0, 0.035, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        return tuple(float(v) for pair in zip(amps, phases, strict=True) for v in pair)

    return Anatomy(
        cx=float(cx),
        body_half_width=float(rng.uniform(0.44, 0.5) * scale),
        lung_top=float(top),
        lung_bottom_r=float(top + height),
        lung_bottom_l=float(top + height + rng.uniform(0.0, 0.035)),
        lung_width_r=float(rng.uniform(0.25, 0.3) * scale),
        lung_width_l=float(rng.uniform(0.23, 0.28) * scale),
        mediastinum_half_width=float(rng.uniform(0.045, 0.065)),
        dome_r=float(rng.uniform(0.12, 0.22)),
        dome_l=float(rng.uniform(0.1, 0.2)),
        heart_cx=float(cx + rng.uniform(0.04, 0.08)),
        heart_cy=float(top + height * rng.uniform(0.78, 0.86)),
        heart_rx=float(0.16 * heart_scale),
        heart_ry=float(0.11 * heart_scale),
        rib_spacing=float(height / rng.uniform(8.5, 10.0)),
        rib_phase=float(rng.uniform(0, 1)),
        rotation_deg=float(rng.normal(0, 2.5)),
        harmonics_r=harm(),
        harmonics_l=harm(),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass
class Rendered:
    """Output of :func:`render_anatomy`: arrays of shape (rows, cols)."""

    attenuation: np.ndarray  # float32, roughly [0, 1]; bright = dense
    lung: np.ndarray  # bool ground-truth lung mask
    lung_soft: np.ndarray  # float32 in [0, 1]; anti-aliased lung mask used to blend lesions
    body: np.ndarray  # bool
    lung_depth: np.ndarray  # float32: 0 at the mediastinal border, 1 at the lateral border (in lungs)
    lung_height: np.ndarray  # float32: 0 at the apex, 1 at the costophrenic angle (in lungs)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _keep_two_largest(mask: np.ndarray) -> np.ndarray:
    """Drop slivers (e.g. lung cut off below the heart): keep the two largest components."""
    lab, n = ndimage.label(mask)
    if n <= 2:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return np.isin(lab, np.argsort(sizes)[-2:] + 1)


def _grid(rows: int, cols: int, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Normalized coordinates, rotated about the image centre by the patient's rotation."""
    y = (np.arange(rows, dtype=np.float32) + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32) + 0.5) / cols
    yy, xx = np.meshgrid(y, x, indexing="ij")
    th = np.deg2rad(a.rotation_deg)
    # Rotate in a square frame (aspect-aware) so shapes do not shear on non-square images.
    ar = cols / rows
    dx, dy = (xx - 0.5) * ar, yy - 0.5
    xr = (np.cos(th) * dx - np.sin(th) * dy) / ar + 0.5
    yr = np.sin(th) * dx + np.cos(th) * dy + 0.5
    return xr.astype(np.float32), yr.astype(np.float32)


def _one_lung(
    xx: np.ndarray,
    yy: np.ndarray,
    *,
    side: int,
    medial_x: float,
    width: float,
    top: float,
    bottom: float,
    dome: float,
    harmonics: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed inside-ness (>0 inside, in normalized units), depth and height maps for one lung."""
    d = side * (xx - medial_x)  # distance from the mediastinal border towards the lateral wall
    t = (yy - top) / (bottom - top)  # 0 at the apex, 1 at the costophrenic angle
    tc = np.clip(t, 0.0, 1.2)
    # Lateral border: rounded apex widening to the base, perturbed by a few low harmonics.
    pert = np.zeros_like(tc)
    for k in range(0, len(harmonics), 2):
        amp, phase = harmonics[k], harmonics[k + 1]
        pert += amp * np.sin((k // 2 + 1) * np.pi * tc + phase)
    lateral = width * (np.sin(0.5 * np.pi * np.clip(tc, 0, 1)) ** 0.55) * (1.0 + pert)
    dn = np.clip(d / width, 0.0, 1.0)
    # Diaphragm: dome highest around the middle of the hemithorax, lowest at the lateral angle.
    base = 1.0 - dome * np.clip(np.sin(np.pi * np.clip(0.15 + 0.85 * (1 - dn), 0, 1)), 0, 1) ** 1.3
    inside = np.minimum.reduce([d, lateral - d, (base - t) * (bottom - top), yy - top])
    return inside, dn.astype(np.float32), np.clip(t, 0, 1).astype(np.float32)


def render_anatomy(a: Anatomy, rows: int, cols: int) -> Rendered:
    """Render attenuation and lung mask for anatomy ``a`` at ``rows x cols``."""
    xx, yy = _grid(rows, cols, a)
    px = 1.0 / rows  # one pixel in normalized height units (soft-edge width)
    ar = cols / rows

    # Body: a wide super-ellipse open at the bottom (abdomen continues past the image edge).
    bx = (xx - a.cx) / a.body_half_width
    by = np.clip((yy - 0.66) / 0.64, -10, 0)
    body_f = 1.0 - (np.abs(bx) ** 3.2 + np.abs(by) ** 4.0)
    body = body_f > 0
    thickness = np.sqrt(np.clip(1 - bx**2, 0, 1))  # thicker in the middle -> denser

    # Lungs.
    med = a.mediastinum_half_width
    in_r, dn_r, t_r = _one_lung(
        xx,
        yy,
        side=-1,
        medial_x=a.cx - med,
        width=a.lung_width_r,
        top=a.lung_top,
        bottom=a.lung_bottom_r,
        dome=a.dome_r,
        harmonics=a.harmonics_r,
    )
    in_l, dn_l, t_l = _one_lung(
        xx,
        yy,
        side=+1,
        medial_x=a.cx + med,
        width=a.lung_width_l,
        top=a.lung_top + 0.01,
        bottom=a.lung_bottom_l,
        dome=a.dome_l,
        harmonics=a.harmonics_l,
    )
    heart_f = (
        1.0 - (((xx - a.heart_cx) * ar) / (a.heart_rx * ar)) ** 2 - ((yy - a.heart_cy) / a.heart_ry) ** 2
    )
    heart_in = heart_f * min(a.heart_rx, a.heart_ry)  # ~signed distance near the border
    lung_signed = np.maximum(in_r, in_l)
    lung_signed = np.minimum(lung_signed, -heart_in)
    lung = _keep_two_largest((lung_signed > 0) & body)
    # Soft edge for blending; islands removed from the hard mask are removed here too.
    near = ndimage.binary_dilation(lung, iterations=2)
    lung_soft = _smoothstep(-0.75 * px, 0.75 * px, lung_signed).astype(np.float32) * (body & near)
    depth = np.where(in_r > in_l, dn_r, dn_l).astype(np.float32)
    height = np.where(in_r > in_l, t_r, t_l).astype(np.float32)

    # Attenuation: soft tissue, lungs, mediastinum + spine, heart, abdomen, bones.
    att = np.where(body, 0.42 + 0.2 * thickness, 0.03).astype(np.float32)
    att += 0.06 * _smoothstep(0.0, 0.08, body_f)  # soft skin edge
    lung_gradient = 0.3 + 0.06 * (1 - height) + 0.04 * depth  # apices / periphery darker
    att -= lung_soft * lung_gradient
    spine = np.exp(-(((xx - a.cx) / (0.6 * med)) ** 2)) * body
    att += 0.12 * spine.astype(np.float32)
    att += 0.05 * _smoothstep(0.0, 0.35, heart_f) * body
    bottom = np.where(xx < a.cx, a.lung_bottom_r, a.lung_bottom_l)
    att += 0.06 * _smoothstep(-0.14, -0.02, yy - bottom) * body * (1.0 - lung_soft)

    # Posterior ribs: arcs descending laterally, one family per hemithorax; clavicles at the top.
    bones = np.zeros_like(att)
    side_d = np.abs(xx - a.cx) - med
    lat = np.clip(side_d / 0.3, 0, 1.3)
    in_thorax = (
        (side_d > -0.02) & (side_d < 0.33) & body & (yy < np.maximum(a.lung_bottom_r, a.lung_bottom_l))
    )
    # All ribs at once: distance to the nearest of the periodic arcs (no per-rib full-image pass).
    q = (yy - (a.lung_top - 0.05 + 0.16 * lat * lat - 0.03 * lat)) / a.rib_spacing - a.rib_phase
    k = np.rint(q)
    band = np.clip(1.0 - np.abs(q - k) / 0.32, 0.0, 1.0)
    bones += np.sqrt(band) * (in_thorax & (k >= 0) & (k < 11))
    for sgn in (-1.0, 1.0):
        # Clavicle: a gently curved band from near the midline out to the shoulder.
        u = sgn * (xx - a.cx)
        cl = (
            a.lung_top
            + 0.01
            - 0.08 * np.clip(u - 0.05, 0, 0.35)
            + 0.25 * (np.clip(u - 0.05, 0, 0.35) - 0.18) ** 2
        )
        band = 1.0 - np.abs(yy - cl) / 0.016
        bones += 1.6 * np.clip(band, 0, 1) * ((u > 0.04) & (u < 0.4) & body)
    att += 0.07 * np.clip(bones, 0, 1.6)

    # Vascular markings: fine, low-contrast texture radiating from the hila (present in every class).
    trng = np.random.default_rng(a.texture_seed)
    tex = trng.standard_normal((rows // 4 + 1, cols // 4 + 1)).astype(np.float32)
    tex = ndimage.zoom(tex, (rows / tex.shape[0], cols / tex.shape[1]), order=1)[:rows, :cols]
    hilar = 1.0 - 0.6 * depth
    att += 0.025 * tex * hilar * lung_soft

    return Rendered(
        attenuation=att.astype(np.float32),
        lung=lung,
        lung_soft=lung_soft,
        body=body,
        lung_depth=depth,
        lung_height=height,
    )
