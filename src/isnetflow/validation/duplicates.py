"""Duplicate radiographs across the whole input: pixel-identical and near-identical images.

Public collections hold the same film twice: under two patient ids, at two sources, re-encoded, resized,
with a caption burned in. A copy in both the training and the test data, or under two patients, inflates
every metric, so the validate stage compares every valid image with every other one (:func:`find_duplicates`)
after the per-file checks:

* **What is compared**: the *normalized* image (the letterboxed, windowed ``image_size`` square that
  training reads), through a 256-bit DCT perceptual hash (:func:`perceptual_hash`: the image box-filtered
  to 64 x 64, its 2-D DCT-II, the 16 x 16 lowest frequencies, each bit = coefficient above their median),
  and, for a pair found, the normalized images' bytes (to say "pixel-identical").
* **Threshold** (:data:`DUPLICATE_MAX_DISTANCE` = 16 bits of 256), measured at ``image_size`` 256 on the
  84 real radiographs of ``../shared/data/real-cxr-lungs`` (one hospital, mostly AP supine: the hardest
  case for telling films apart). The hash splits its coefficients at the median, so distances are even.

  ==========================================================  ===========================================
  pairs                                                       Hamming distance (of 256)
  ==========================================================  ===========================================
  real, different patients (3,396 pairs)                      min 72 (2 pairs), 1st pct 88, median 118
  real, different films of one patient (90 pairs)             min 58, then 66, 70; median 111
  synthetic cohorts, different patients (7 cohorts, 138,000)  min 26; 1st pct 62-66
  synthetic follow-ups of one patient (same anatomy)          6, 10, 12, 12, 14, ... (4 cohorts of 300)
  same real film resized to 60% + JPEG q60                    max 6
  ... with a caption ("day 4", an "L") burned in              max 10
  ... caption + resize + JPEG                                 max 14 (median 6)
  ... caption + a gray arrow + resize + JPEG                  median 13, max 26: most found
  ... a large white caption box (4% of the image)             median 48: not found
  ... cropped 3% on each side                                 min 40: not found
  ==========================================================  ===========================================

  256 bits, because a 64-bit pHash (8 x 8 of a 32 x 32 DCT) cannot separate them: different real patients
  come down to 8 bits, captioned copies up to 6, and 25 of 300 synthetic images match another
  (docs/usage.md).
* **Decision**: rows are taken in path order; a row within the distance of an earlier kept row is a
  duplicate of it (the closest one, then the first by path); the earlier row is kept. The duplicate is
  quarantined as ``duplicate`` when the two differ in patient, site or internal/external role (the
  reason names the kept file and what differs), and as ``duplicate_same_patient`` (kept once) when they
  are the same patient at the same site. Within one patient the limit is
  :data:`SAME_PATIENT_MAX_DISTANCE` (4 bits): copies (pixel-identical, re-encoded, resized: mostly 0-2,
  at most 6) are found, a patient's other films are not (real ones are 58 bits apart or more; the
  synthetic follow-ups, from 6).

All pairs are compared (blocks of rows at a time, numpy): n^2 hash comparisons, a few seconds for
10,000 images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from isnetflow.dicom.issues import Issue
from isnetflow.dicom.normalize import _float_image

__all__ = [
    "DUPLICATE_MAX_DISTANCE",
    "SAME_PATIENT_MAX_DISTANCE",
    "find_duplicates",
    "hamming",
    "image_keys",
    "perceptual_hash",
    "quarantine_image_duplicates",
]

#: Two images whose 256-bit perceptual hashes differ in at most this many bits are the same radiograph
#: (measured: see the module docstring).
DUPLICATE_MAX_DISTANCE = 16
#: The limit between two images of the same patient at the same site: only copies (re-encoded, resized).
#: A second film of one patient can be close (synthetic follow-ups, same anatomy and a pose 1 degree
#: apart: from 6 bits), and keeping both costs a double weight, not a leak.
SAME_PATIENT_MAX_DISTANCE = 4

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BLOCK = 64  # rows compared with all others at a time: 64 x n x 32 bytes of work


def perceptual_hash(image: np.ndarray) -> int:
    """256-bit DCT perceptual hash of a 2-D image (any real dtype; the normalized float image in the stage):
    box-filtered to 64 x 64, 2-D DCT-II, the 16 x 16 lowest frequencies above their median."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    f = _float_image(np.ascontiguousarray(image, dtype=np.float32))
    small = np.asarray(f.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)
    low = dctn(small, type=2, norm="ortho")[:16, :16]
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Bits in which two hashes differ."""
    return bin(a ^ b).count("1")


def image_keys(image: np.ndarray) -> dict[str, str]:
    """What the stage keeps of a normalized image to compare it: its perceptual hash (64 hex digits) as the
    row's ``_phash`` (about 0.15 ms at 256 px)."""
    return {"_phash": f"{perceptual_hash(image):064x}"}


def _same_pixels(a: str | None, b: str | None) -> bool:
    """Whether two normalized images the stage wrote (``_tmp_image``: the same format and encoder
    settings, so the same pixels are the same bytes) hold the same pixels."""
    if not a or not b:
        return False
    try:
        pa, pb = Path(a), Path(b)
        return pa.stat().st_size == pb.stat().st_size and pa.read_bytes() == pb.read_bytes()
    except OSError:
        return False


def _distances(block: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Bits differing between each of ``block`` and each of ``hashes`` (rows of four uint64 words)."""
    x = block[:, None, :] ^ hashes[None, :, :]
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).sum(axis=2, dtype=np.int32)
    return _POPCOUNT[x.view(np.uint8)].sum(axis=2, dtype=np.int32)


def _as_words(hashes: list[int]) -> np.ndarray:
    data = b"".join(h.to_bytes(32, "big") for h in hashes)
    return np.frombuffer(data, dtype=">u8").astype(np.uint64).reshape(len(hashes), 4)


def find_duplicates(
    hashes: list[int],
    max_distance: int = DUPLICATE_MAX_DISTANCE,
    accept: Callable[[int, int, int], bool] | None = None,
) -> dict[int, tuple[int, int]]:
    """``{i: (j, distance)}``: item ``i`` is a duplicate of the earlier kept item ``j`` (items in the order
    given; the closest kept one, then the first). Kept items map to nothing. ``accept(i, j, distance)``,
    when given, may turn down a pair within ``max_distance`` (a stricter limit for some pairs)."""
    h = _as_words(hashes)
    near: dict[int, list[tuple[int, int]]] = {}
    for start in range(0, len(h), _BLOCK):
        d = _distances(h[start : start + _BLOCK], h)
        for bi, j in zip(*np.nonzero(d <= max_distance), strict=True):
            i = start + int(bi)
            if j < i and (accept is None or accept(i, int(j), int(d[bi, j]))):
                near.setdefault(i, []).append((int(d[bi, j]), int(j)))
    out: dict[int, tuple[int, int]] = {}
    for i in sorted(near):
        kept = [(dist, j) for dist, j in near[i] if j not in out]
        if kept:
            dist, j = min(kept)
            out[i] = (j, dist)
    return out


def _who(row: dict[str, Any]) -> tuple[str, str, str]:
    return str(row.get("patient_id") or ""), str(row.get("site") or ""), str(row.get("role") or "")


def quarantine_image_duplicates(
    rows: list[dict[str, Any]],
    quarantine: Callable[[dict[str, Any], Issue], None],
    max_distance: int = DUPLICATE_MAX_DISTANCE,
    same_patient_distance: int = SAME_PATIENT_MAX_DISTANCE,
) -> int:
    """Quarantine (with ``quarantine(row, issue)``) the valid rows that repeat an earlier kept image (see
    the module docstring); returns how many. Rows without ``_phash`` (not valid, or not normalized) are
    not compared."""
    cand = sorted(
        (r for r in rows if r.get("status") == "valid" and r.get("_phash")), key=lambda r: r["path"]
    )
    who = [_who(r) for r in cand]

    def accept(i: int, j: int, dist: int) -> bool:  # one patient's own films: copies only
        return dist <= same_patient_distance or not who[i][0] or who[i] != who[j]

    dups = find_duplicates([int(r["_phash"], 16) for r in cand], max_distance, accept)
    for i, (j, dist) in sorted(dups.items()):
        row, kept = cand[i], cand[j]
        same_pixels = _same_pixels(row.get("_tmp_image"), kept.get("_tmp_image"))
        what = (
            "pixel-identical to"
            if same_pixels
            else f"near-identical (perceptual hash distance {dist} <= {max_distance}) to"
        )
        (pid, site, role), (kpid, ksite, krole) = _who(row), _who(kept)
        if pid and (pid, site, role) == (kpid, ksite, krole):
            message = f"same patient: {what} {kept['path']} of patient {pid}, kept once"
            quarantine(row, Issue("duplicate_same_patient", message))
            continue
        differs = []
        if pid != kpid or not pid:
            differs.append(f"patient {pid or '?'} here, {kpid or '?'} there")
        if site != ksite:
            differs.append(f"site {site or '?'} here, {ksite or '?'} there")
        if role != krole:
            differs.append(f"{role or 'no role'} here, {krole or 'no role'} there")
        quarantine(row, Issue("duplicate", f"duplicate image: {what} {kept['path']} ({'; '.join(differs)})"))
    return len(dups)
