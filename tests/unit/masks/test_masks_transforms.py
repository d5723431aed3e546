"""Orientation and alignment: reader -> network space -> back, and the training augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import RandAffined, RandZoomd
from PIL import Image

from isnetflow.masks.io import read_image, read_reference_mask
from isnetflow.masks.metrics import dice
from isnetflow.masks.transforms import RandCollimationd, from_model_space, to_model_space, train_transforms
from isnetflow.synth.dicom_writer import DicomMeta, write_dicom


def _asymmetric(rows: int = 150, cols: int = 230) -> tuple[np.ndarray, np.ndarray]:
    """Dark image with a bright blob in the top-left corner (rows != columns on purpose)."""
    img = np.full((rows, cols), 0.1, dtype=np.float32)
    blob = np.zeros((rows, cols), dtype=bool)
    blob[10:40, 15:60] = True
    img[blob] = 0.9
    return img, blob


def _meta(photometric: str) -> DicomMeta:
    return DicomMeta(
        sop_instance_uid="1.2.3.4.5",
        study_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.4.6",
        patient_id="P1",
        institution="Test",
        modality="CR",
        view_position="PA",
        photometric=photometric,
        bits_stored=12,
        pixel_spacing_mm=0.2,
        study_date="20240101",
        window_center=2048,
        window_width=4096,
    )


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "dicom_mono2", "dicom_mono1"])
def test_blob_stays_top_left_through_reader_and_back(tmp_path: Path, kind: str) -> None:
    img, blob = _asymmetric()
    path = tmp_path / f"x.{'dcm' if kind.startswith('dicom') else 'jpg' if kind == 'jpeg' else 'png'}"
    if kind == "png8" or kind == "jpeg":
        Image.fromarray((img * 255).astype(np.uint8)).save(path, quality=95)
    elif kind == "png16":
        Image.fromarray((img * 65535).astype(np.uint16)).save(path)
    else:
        stored = np.rint(img * 4095).astype(np.uint16)
        if kind == "dicom_mono1":
            stored = 4095 - stored  # stored inverted; the reader must invert back (bright = dense)
        write_dicom(path, stored, _meta("MONOCHROME1" if kind == "dicom_mono1" else "MONOCHROME2"))
    loaded = read_image(path).pixels
    assert loaded.shape == img.shape
    assert loaded[blob].mean() > loaded[~blob].mean() + 0.5  # bright where the blob is

    x, box = to_model_space(loaded, 64)
    assert x.shape == (64, 64)
    # Letterbox: 150x230 -> pad 40 rows on top and bottom; the blob is in the top-left of the content.
    r, c = np.unravel_index(np.argmax(x), x.shape)
    assert c < 20 and box.pad_top * box.scale <= r < box.pad_top * box.scale + 15
    back = from_model_space(x, box)
    assert back.shape == img.shape
    assert dice(back > 0.5, blob) > 0.8


def test_reference_mask_values(tmp_path: Path) -> None:
    arr = np.zeros((20, 30), dtype=np.uint8)
    arr[2:8, 3:9] = 255
    arr[10:12, 3:9] = 127
    Image.fromarray(arr).save(tmp_path / "m.png")
    ref = read_reference_mask(tmp_path / "m.png")
    assert ref.lung.sum() == 36 and ref.ignore.sum() == 12 and not (ref.lung & ref.ignore).any()


def test_geometric_augmentation_moves_image_and_masks_together() -> None:
    size = 96
    label = np.zeros((size, size), dtype=np.float32)
    label[10:40, 12:35] = 1.0  # asymmetric: top-left
    label[50:85, 60:80] = 1.0
    ignore = np.zeros_like(label)
    ignore[20:25, 15:20] = 1.0
    tf = train_transforms(size, "strong")
    geometric = [t for t in tf.transforms if isinstance(t, RandZoomd | RandAffined)]
    assert len(geometric) == 2
    for seed in range(8):
        d = {
            "image": torch.as_tensor(label)[None],
            "label": torch.as_tensor(label)[None],
            "ignore": torch.as_tensor(ignore)[None],
        }
        for t in geometric:
            t.set_random_state(seed)
            t.prob = 1.0
            d = t(d)
        moved_image = np.asarray(d["image"][0]) > 0.5
        moved_label = np.asarray(d["label"][0]) > 0.5
        assert moved_label.any()
        assert dice(moved_image, moved_label) > 0.9, seed
        assert set(np.unique(np.asarray(d["label"]))) <= {0.0, 1.0}  # nearest-neighbour masks


def test_full_augmentation_runs_and_keeps_ranges() -> None:
    size = 64
    rng = np.random.default_rng(0)
    d0 = {
        "image": torch.as_tensor(rng.random((1, size, size), dtype=np.float32)),
        "label": torch.zeros(1, size, size),
        "ignore": torch.zeros(1, size, size),
    }
    d0["label"][0, 10:50, 8:28] = 1.0
    tf = train_transforms(size, "strong")
    tf.set_random_state(1)
    for _ in range(5):
        d = tf(dict(d0))
        img = np.asarray(d["image"])
        assert img.shape == (1, size, size) and img.min() >= 0.0 and img.max() <= 1.0
        assert set(np.unique(np.asarray(d["label"]))) <= {0.0, 1.0}


def test_collimation_blanks_image_and_lung_in_the_band() -> None:
    t = RandCollimationd(
        "image", label_keys="label", ignore_keys="ignore", prob=1.0, side_prob=1.0, max_fraction=0.2
    )
    t.set_random_state(3)
    d = t(
        {
            "image": torch.full((1, 50, 50), 0.5),
            "label": torch.ones(1, 50, 50),
            "ignore": torch.ones(1, 50, 50),
        }
    )
    band = np.asarray(d["image"][0]) != 0.5
    assert band[0].all() and band[-1].all() and band[:, 0].all() and band[:, -1].all()
    assert (np.asarray(d["label"][0])[band] == 0).all() and (np.asarray(d["ignore"][0])[band] == 0).all()
    assert (np.asarray(d["label"][0])[~band] == 1).all()


@pytest.mark.parametrize("name", ["zoom_out", "aspect_crop", "rotate", "collimation"])
def test_geometric_perturbations_keep_masks_aligned(name: str) -> None:
    from isnetflow.masks.robustness import perturb

    _, blob = _asymmetric(120, 100)
    blob[60:100, 50:90] = True
    image = blob.astype(np.float32) * 0.8 + 0.1
    im, lung, ign = perturb(name, image, blob, np.zeros_like(blob), seed=3)
    assert im.shape == lung.shape == ign.shape
    assert lung.any() and dice((im > 0.5) & (im < 0.95), lung) > 0.9  # white shutters are not lung
    again = perturb(name, image, blob, np.zeros_like(blob), seed=3)
    assert np.array_equal(again[0], im) and np.array_equal(again[1], lung)  # deterministic
