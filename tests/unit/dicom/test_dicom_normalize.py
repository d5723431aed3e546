"""Pure normalization: windowing, MONOCHROME1 inversion, letterbox geometry and its inverse."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from isnetflow.dicom import (
    Letterbox,
    from_uint16,
    intensity_window,
    letterbox,
    normalize_intensity,
    normalize_letterbox,
    to_uint16,
    unletterbox,
)


def _ramp(rows: int = 40, cols: int = 50) -> np.ndarray:
    return np.tile(np.linspace(100.0, 1100.0, cols, dtype=np.float32), (rows, 1))


def test_monochrome2_keeps_and_monochrome1_inverts_polarity() -> None:
    values = _ramp()
    mono2, win2 = normalize_intensity(values, photometric="MONOCHROME2")
    mono1, win1 = normalize_intensity(values, photometric="MONOCHROME1")
    assert win1 == win2
    assert mono2.dtype == np.float32 and mono2.min() == 0.0 and mono2.max() == 1.0
    assert mono2[:, 0].mean() < 0.05 and mono2[:, -1].mean() > 0.95  # high value = bright
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)  # MONOCHROME1: high value = dark


def test_percentile_window_ignores_outliers() -> None:
    values = _ramp()
    values[0, 0] = 1e6  # a burned-in max-value marker pixel must not compress the range
    img, (lo, hi) = normalize_intensity(values, photometric="MONOCHROME2", percentiles=(0.5, 99.5))
    assert lo < 110 and hi < 1200
    assert img[10:, 25].mean() == pytest.approx(0.5, abs=0.05)


def test_dicom_window_and_fallback() -> None:
    values = _ramp()
    lo, hi = intensity_window(values, method="dicom", window_center=600.5, window_width=201)
    assert (lo, hi) == pytest.approx((500.0, 700.0))
    img, _ = normalize_intensity(values, photometric="MONOCHROME2", method="dicom", window=(lo, hi))
    assert img[:, 0].max() == 0.0 and img[:, -1].min() == 1.0
    # no usable window in the header -> the percentile window
    assert intensity_window(values, method="dicom", window_center=None, window_width=None) == pytest.approx(
        intensity_window(values, method="percentile")
    )


def test_constant_input_gives_zeros_not_nan() -> None:
    img, (lo, hi) = normalize_intensity(np.full((8, 8), 7.0, np.float32), photometric="MONOCHROME2")
    assert lo == hi and np.all(img == 0.0)


@pytest.mark.parametrize(("rows", "cols"), [(30, 50), (50, 30), (40, 40), (31, 50)])
def test_letterbox_pads_centred_and_records_geometry(rows: int, cols: int) -> None:
    image = np.ones((rows, cols), np.float32)
    out, box = letterbox(image, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert box.side == max(rows, cols) and box.scale == pytest.approx(64 / max(rows, cols))
    assert box.pad_top + box.pad_bottom == box.side - rows
    assert box.pad_left + box.pad_right == box.side - cols
    assert abs(box.pad_top - box.pad_bottom) <= 1 and abs(box.pad_left - box.pad_right) <= 1
    # the padding is dark (air) and the image area is where the box says
    if rows < cols:
        assert out[0].max() < 0.5 and out[32].min() > 0.99
    elif cols < rows:
        assert out[:, 0].max() < 0.5 and out[:, 32].min() > 0.99
    assert Letterbox.from_dict(box.to_dict()) == box


def test_unletterbox_maps_a_mask_back_to_the_original_grid() -> None:
    rng = np.random.default_rng(0)
    rows, cols = 90, 60
    mask = np.zeros((rows, cols), bool)
    mask[20:70, 10:25] = True  # "left lung"
    mask[25:75, 35:52] = True  # "right lung"
    small, box = letterbox(mask, 48, resample="nearest")
    assert small.dtype == np.bool_
    back = unletterbox(small, box)
    assert back.shape == (rows, cols)
    # 90 -> 48 -> 90 px: only boundary pixels may differ, and nothing is shifted
    assert (mask & back).sum() / (mask | back).sum() > 0.85
    np.testing.assert_allclose(ndimage.center_of_mass(back), ndimage.center_of_mass(mask), atol=0.5)
    soft, box2 = letterbox(mask.astype(np.float32), 48)  # a heatmap / soft mask: bilinear both ways
    back2 = unletterbox(soft, box2, resample="bilinear") > 0.5
    assert (mask & back2).sum() / (mask | back2).sum() > 0.98
    with pytest.raises(ValueError, match="expected shape"):
        unletterbox(rng.random((10, 10)), box)


def test_uint16_storage_roundtrip() -> None:
    x = np.linspace(0, 1, 1001, dtype=np.float32).reshape(7, 143)
    stored = to_uint16(x)
    assert stored.dtype == np.uint16 and stored.min() == 0 and stored.max() == 65535
    assert np.abs(from_uint16(stored) - x).max() <= 0.5 / 65535 + 1e-7


# --------------------------------------------------------------------------------------------------
# The one-pass path used by the validate stage equals the step-by-step one
# --------------------------------------------------------------------------------------------------


def _two_step(
    pixels: np.ndarray,
    window: tuple[float, float],
    photometric: str,
    size: int | None,
    slope: float,
    icpt: float,
) -> np.ndarray:
    values = pixels.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if icpt:
        values += np.float32(icpt)
    image, _ = normalize_intensity(values, photometric=photometric, window=window)
    return image if size is None else letterbox(image, size)[0]


@pytest.mark.parametrize(
    ("shape", "size"),
    [((120, 90), 64), ((90, 120), 64), ((101, 101), 64), ((77, 130), 64), ((40, 50), 64), ((64, 50), 64)],
)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize(
    ("dtype", "slope", "icpt"),
    [(np.uint16, 1.0, 0.0), (np.uint8, 1.0, 0.0), (np.uint16, 0.5, -100.0), (np.int16, -2.0, 1000.0)],
)
def test_normalize_letterbox_equals_normalize_then_letterbox(
    shape: tuple[int, int], size: int, photometric: str, dtype: Any, slope: float, icpt: float
) -> None:
    rng = np.random.default_rng(sum(shape))
    hi = 250 if dtype == np.uint8 else 4000
    pixels = rng.integers(0, hi, shape).astype(dtype)
    values = pixels.astype(np.float32) * np.float32(slope) + np.float32(icpt)
    window = intensity_window(values)
    for out_size in (size, None):
        got, box = normalize_letterbox(
            pixels, window=window, photometric=photometric, size=out_size, slope=slope, intercept=icpt
        )
        want = _two_step(pixels, window, photometric, out_size, slope, icpt)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        if out_size is None:
            assert box is None
        else:
            assert box == Letterbox.for_shape(*shape, size)
            # as stored (uint16), at most one level apart from the two-step result
            assert np.abs(to_uint16(got).astype(int) - to_uint16(want).astype(int)).max() <= 1


def test_normalize_letterbox_degenerate_window_matches_normalize_intensity() -> None:
    pixels = np.full((10, 12), 7, np.uint16)
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        got, _ = normalize_letterbox(pixels, window=(7.0, 7.0), photometric=photometric, size=None)
        want, _ = normalize_intensity(pixels.astype(np.float32), photometric=photometric, window=(7.0, 7.0))
        np.testing.assert_array_equal(got, want)


def test_shared_memory_pillow_image_resizes_like_fromarray() -> None:
    from PIL import Image

    from isnetflow.dicom.normalize import _float_image

    image = np.random.default_rng(1).random((97, 131), dtype=np.float32)
    a = np.asarray(_float_image(image).resize((40, 40), Image.Resampling.BILINEAR))
    b = np.asarray(Image.fromarray(image).resize((40, 40), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# The percentile window is computed on a sub-grid: close to the full-image percentiles
# --------------------------------------------------------------------------------------------------


def _window_errors(values: np.ndarray) -> float:
    """Largest distance between sub-grid and full-image limits, as a fraction of the window width."""
    full = np.percentile(values, (0.5, 99.5))
    sub = np.asarray(intensity_window(values))
    return float(np.abs(full - sub).max() / (full[1] - full[0]))


def test_subsampled_percentiles_match_the_full_image(
    synth_cohort: Path, request: pytest.FixtureRequest
) -> None:
    from isnetflow.dicom import decode_pixels, header_fields, load_dicom, modality_values

    files = sorted((synth_cohort / "dicom").rglob("*.dcm"))
    with contextlib.suppress(pytest.skip.Exception):  # the real files too, when the shared data is there
        files += sorted(Path(request.getfixturevalue("real_dicom_dir")).glob("*.dcm"))
    errors = []
    for f in files:
        ds = load_dicom(f).dataset
        fields = header_fields(ds)
        values = modality_values(ds, decode_pixels(ds, fields), fields)
        errors.append(_window_errors(values))
    # typically exact or within a fraction of a percent; the worst case is an upper limit that falls in
    # the gap between tissue and a few burned-in text pixels (documented in isnetflow.dicom.normalize)
    assert np.median(errors) < 0.005 and max(errors) < 0.05, (np.median(errors), max(errors))
    # large images are really subsampled: the sub-grid has at most ~2^15 pixels
    big = np.random.default_rng(2).normal(1000, 200, (2048, 1536)).astype(np.float32)
    assert _window_errors(big) < 0.005
