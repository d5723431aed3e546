"""PNG and JPEG inputs (isnetflow.dicom.picture), made from the real radiographs of ../shared/data.

Every kind a public collection ships: 8/16-bit gray, RGB and RGBA that are gray, palette, JPEG; a colour
image with coloured arrows drawn on it is ``colour_image``; validated under the manifest contract and
normalized like a DICOM file with the same pixels.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from isnetflow.config import ValidateConfig
from isnetflow.dicom import analyze
from isnetflow.dicom.picture import analyze_picture, picture_uid
from isnetflow.validation.dataset import validate_tree
from isnetflow.validation.manifest import read_manifest


@pytest.fixture(scope="module")
def films(shared_data: Path) -> list[tuple[str, Image.Image]]:
    """One real radiograph per patient (patient id, 8-bit gray image), in the manifest's order."""
    root = shared_data / "real-cxr-lungs"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"{root} is absent")
    m = pd.read_csv(root / "manifest.csv", dtype=str).drop_duplicates("patient_id")
    return [
        (str(p), Image.open(root / i).convert("L")) for p, i in zip(m["patient_id"], m["image"], strict=True)
    ]


def _encode(im: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _arrows(im: Image.Image) -> Image.Image:
    """Coloured arrows drawn on the lungs, as in the COVID-19 image collection."""
    rgb = im.convert("RGB")
    d = ImageDraw.Draw(rgb)
    w, h = rgb.size
    for colour, (x, y) in (((255, 0, 0), (0.3, 0.35)), ((40, 220, 40), (0.65, 0.4))):
        d.line([(w * x, h * y), (w * (x + 0.1), h * (y + 0.12))], fill=colour, width=4)
        d.polygon([(w * x, h * y), (w * (x + 0.04), h * y), (w * x, h * (y + 0.04))], fill=colour)
    return rgb


def _dicom(pixels: np.ndarray) -> bytes:
    """The same pixels as an 8-bit MONOCHROME2 CR DICOM file."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1")  # CR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.ViewPosition, ds.InstitutionName = "P1", "CR", "PA", "Site A"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def test_every_gray_encoding_normalizes_like_the_dicom_file(films: list[tuple[str, Image.Image]]) -> None:
    """L, 16-bit, RGB, RGBA and palette encodings of one film give the DICOM file's normalized image."""
    _, film = films[0]
    cfg = ValidateConfig(image_size=128)
    reference = analyze(_dicom(np.asarray(film)), cfg, patient_id="P1", site="Site A")
    assert reference.ok and reference.image is not None
    rgba = film.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(film.size))  # alpha is ignored
    encodings = {
        "L": _encode(film),
        "I;16": _encode(Image.fromarray(np.asarray(film).astype(np.uint16) * 257)),
        "RGB": _encode(film.convert("RGB")),
        "RGBA": _encode(rgba),
        "P": _encode(film.convert("P")),
    }
    for mode, data in encodings.items():
        assert Image.open(io.BytesIO(data)).mode == mode
        a = analyze_picture(data, cfg, patient_id="P1", site="Site A")
        assert a.ok and a.image is not None, (mode, a.issues)
        np.testing.assert_allclose(a.image, reference.image, atol=1e-5, err_msg=mode)
        assert a.letterbox == reference.letterbox
        assert a.fields["bits_stored"] == (16 if mode == "I;16" else 8)
        assert a.fields["sop_instance_uid"] == picture_uid(hashlib.sha256(data).hexdigest())
    for mode in ("L", "RGB"):  # a JPEG (a gray one stored as YCbCr too) is gray, within its compression
        a = analyze_picture(_encode(film.convert(mode), "JPEG", quality=90), cfg, patient_id="P1", site="A")
        assert a.ok and a.image is not None, (mode, a.issues)
        assert float(np.abs(a.image - reference.image).mean()) < 0.01


def test_coloured_arrows_are_a_colour_image(films: list[tuple[str, Image.Image]]) -> None:
    _, film = films[1]
    for fmt in ("PNG", "JPEG"):
        a = analyze_picture(_encode(_arrows(film), fmt), ValidateConfig(), patient_id="P", site="S")
        assert [i.code for i in a.issues] == ["colour_image"] and a.image is None
        assert a.issues[0].message.startswith("colour image (RGB): ")
    tinted = Image.merge("RGB", [film, film, film.point(lambda v: v * 0.7)])  # a sepia-like tint
    a = analyze_picture(_encode(tinted), ValidateConfig(), patient_id="P", site="S")
    assert [i.code for i in a.issues] == ["colour_image"]


def test_a_folder_of_pictures_under_the_manifest_contract(
    films: list[tuple[str, Image.Image]], tmp_path: Path
) -> None:
    """Listed pictures are inputs (valid, or quarantined with a reason); an unlisted one is ignored."""
    src = tmp_path / "in"
    src.mkdir()
    kinds = {
        "gray8.png": lambda im: _encode(im),
        "gray16.png": lambda im: _encode(Image.fromarray(np.asarray(im).astype(np.uint16) * 257)),
        "rgb.png": lambda im: _encode(im.convert("RGB")),
        "rgba.png": lambda im: _encode(im.convert("RGBA")),
        "palette.png": lambda im: _encode(im.convert("P")),
        "gray.jpg": lambda im: _encode(im, "JPEG", quality=90),
        "rgb.jpeg": lambda im: _encode(im.convert("RGB"), "JPEG", quality=90),
        "arrows.png": lambda im: _encode(_arrows(im)),
        "broken.png": lambda im: _encode(im)[:3000],
        "no_site.png": lambda im: _encode(im),
        "no_patient.png": lambda im: _encode(im),
        "unlisted.png": lambda im: _encode(im),
    }
    rows, sizes = [], {}
    for k, (name, make) in enumerate(kinds.items()):
        patient, film = films[k]  # a different patient's film each: none is a duplicate of another
        sizes[name] = (film.height, film.width)
        (src / name).write_bytes(make(film))
        if name != "unlisted.png":
            rows.append(
                {
                    "path": name,
                    "label": ("normal", "covid")[k % 2],
                    "patient_id": "" if name == "no_patient.png" else patient,
                    "site": "" if name == "no_site.png" else "Site A",
                }
            )
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    cfg = ValidateConfig(image_size=64, min_images_per_site=1, workers=1)
    result = validate_tree(cfg, src, tmp_path / "out", labels=src / "labels.csv")
    m = read_manifest(tmp_path / "out")
    got = {r["path"]: (r["status"], r["reason_code"]) for r in m.to_dict("records")}
    valid = ("gray8.png", "gray16.png", "rgb.png", "rgba.png", "palette.png", "gray.jpg", "rgb.jpeg")
    assert got == {
        **{name: ("valid", "") for name in valid},
        "arrows.png": ("quarantined", "colour_image"),
        "broken.png": ("quarantined", "decode_failed"),
        "no_site.png": ("quarantined", "no_site"),
        "no_patient.png": ("quarantined", "missing_identifier"),
        "unlisted.png": ("ignored", "not_dicom"),
        "labels.csv": ("ignored", "labels_file"),
    }
    assert result.summary["expectations"]["success"], result.summary["failure"]
    for r in m[m["status"] == "valid"].to_dict("records"):
        assert r["sop_instance_uid"].startswith("2.25.") and len(r["sop_instance_uid"]) <= 64
        assert (
            r["image"] == f"images/{r['sop_instance_uid']}.npy" and (tmp_path / "out" / r["image"]).is_file()
        )
        assert r["photometric_interpretation"] == "MONOCHROME2" and r["modality"] == ""
        assert (r["rows"], r["columns"]) == sizes[r["path"]]
        assert r["bits_stored"] == (16 if r["path"] == "gray16.png" else 8)
    reasons = dict(zip(m["path"], m["reason"], strict=True))
    assert "not a decodable PNG/JPEG image" in reasons["broken.png"]
    assert "nor listed in the labels" in reasons["unlisted.png"]
