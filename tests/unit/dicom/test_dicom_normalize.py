"""Pure normalization: windowing, MONOCHROME1 inversion, letterbox geometry and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from isnetflow.dicom import (
    Letterbox,
    from_uint16,
    intensity_window,
    letterbox,
    normalize_intensity,
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
