"""The two real CR files: they are read, decoded and normalized with the right orientation facts.

Regions are fractions of the image (rows, then columns). In a PA chest film the lung fields (left and
right of the midline, mid-height) hold air and must come out *darker* than the spine/mediastinum
column, and the film border outside the body must be dark.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from isnetflow.config import ValidateConfig
from isnetflow.dicom import analyze, decode_pixels, load_dicom, read_image

pytestmark = pytest.mark.data

MONO1 = "CR-MONO1-10-chest.dcm"
JPEG = "cr-chest-pa-jpeg-baseline.dcm"


def _mean(a: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> float:
    h, w = a.shape
    return float(a[int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)].mean())


def _lungs(a: np.ndarray) -> float:
    return (_mean(a, 0.35, 0.6, 0.2, 0.35) + _mean(a, 0.35, 0.6, 0.65, 0.8)) / 2


def _spine(a: np.ndarray) -> float:
    return _mean(a, 0.3, 0.7, 0.46, 0.54)


def test_monochrome1_without_meta_header_is_read_and_inverted(real_dicom_dir: Path) -> None:
    path = real_dicom_dir / MONO1
    image, header = read_image(path)
    assert image.shape == (440, 440) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert header["photometric_interpretation"] == "MONOCHROME1"
    assert header["bits_allocated"] == 16 and header["bits_stored"] == 10
    assert header["transfer_syntax_uid"] == "1.2.840.10008.1.2"  # inferred: implicit VR little endian
    assert any("no DICOM file meta header" in w for w in header["warnings"])

    # after normalization: air in the lungs is dark, the spine/mediastinum bright
    assert _spine(image) - _lungs(image) > 0.25
    assert _lungs(image) < 0.5 < _spine(image)
    # the unexposed film corners on the right (outside the body) are dark
    assert _mean(image, 0.0, 0.04, 0.96, 1.0) < 0.1 and _mean(image, 0.96, 1.0, 0.96, 1.0) < 0.1

    # the stored MONOCHROME1 values have the opposite relation: the inversion is what makes it right
    raw = decode_pixels(load_dicom(path).dataset).astype(np.float64)
    assert _lungs(raw) > _spine(raw) + 200
    assert _mean(raw, 0.0, 0.04, 0.96, 1.0) > _mean(raw, 0.3, 0.7, 0.46, 0.54)


def test_jpeg_baseline_is_decoded(real_dicom_dir: Path) -> None:
    path = real_dicom_dir / JPEG
    image, header = read_image(path)
    assert image.shape == (1024, 1024)
    assert header["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.50"
    assert header["photometric_interpretation"] == "MONOCHROME2"
    assert header["warnings"] == []
    raw = decode_pixels(load_dicom(path).dataset)
    assert raw.dtype == np.uint8 and int(raw.max()) - int(raw.min()) > 200  # real decoded content
    assert _spine(image) - _lungs(image) > 0.25
    corners = [_mean(image, r, r + 0.04, c, c + 0.04) for r in (0.0, 0.96) for c in (0.0, 0.96)]
    assert max(corners) < 0.1  # outside the body
    # MONOCHROME2: the stored values already have the right polarity
    assert _lungs(raw.astype(float)) < _spine(raw.astype(float))


def test_letterboxed_read_records_geometry(real_dicom_dir: Path) -> None:
    image, header = read_image(real_dicom_dir / JPEG, size=128)
    assert image.shape == (128, 128)
    assert header["letterbox"]["scale"] == pytest.approx(0.125)
    assert _spine(image) > _lungs(image)


def test_real_files_pass_the_per_file_checks(real_dicom_dir: Path, tmp_path: Path) -> None:
    """With identifiers from labels (the MONO1 file has no PatientID, the JPEG no InstitutionName)
    both files are valid; without them they are quarantined for exactly that reason."""
    cfg = ValidateConfig()
    mono1 = analyze((real_dicom_dir / MONO1).read_bytes(), cfg, patient_id="P-1", site="Fuji demo")
    jpeg = analyze((real_dicom_dir / JPEG).read_bytes(), cfg, patient_id=None, site="NIH")
    for a in (mono1, jpeg):
        assert a.ok, [str(i) for i in a.issues]
        assert a.image is not None and a.image.shape == (cfg.image_size, cfg.image_size)
    assert [i.code for i in mono1.issues] == ["no_meta_header"]
    # the JPEG's PatientName equals its pseudonymous PatientID: accepted as de-identified
    assert jpeg.fields["patient_id"] == "16d7f894-55d7-4d95-8957-d18987f0e981"

    bare = analyze((real_dicom_dir / MONO1).read_bytes(), cfg)
    assert not bare.ok and bare.issues[1].message == "missing required identifier(s): PatientID"
    bare_jpeg = analyze((real_dicom_dir / JPEG).read_bytes(), cfg)
    assert [i.code for i in bare_jpeg.issues if i.is_error] == ["no_site"]

    # the reader also accepts a path string and bytes equally
    copy = tmp_path / "x.dcm"
    shutil.copy(real_dicom_dir / MONO1, copy)
    a, _ = read_image(str(copy))
    b, _ = read_image(copy.read_bytes())
    np.testing.assert_array_equal(a, b)


def test_a_real_pseudonymized_file_is_not_phi_under_another_labels_id(real_dicom_dir: Path) -> None:
    """The public JPEG CR file carries a pseudonym (a UUID) as both PatientName and PatientID."""
    data = (real_dicom_dir / JPEG).read_bytes()
    ds = load_dicom(data).dataset
    assert str(ds.PatientName) == ds.PatientID  # the premise
    a = analyze(data, ValidateConfig(image_size=64), patient_id="p-001", site="Site A")
    assert a.ok, [str(i) for i in a.issues]
    assert a.fields["patient_id"] == "p-001"
