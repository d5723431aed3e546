"""Duplicate images across the input (isnetflow.validation.duplicates), on the real radiographs of
../shared/data: the same film under another patient, at another site, across internal and external, or
twice for one patient; the real set's different films are never taken for one another."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from isnetflow.config import ValidateConfig
from isnetflow.dicom.normalize import _percentile_window, _robust_sample, normalize_letterbox
from isnetflow.validation.dataset import validate_tree
from isnetflow.validation.duplicates import (
    DUPLICATE_MAX_DISTANCE,
    SAME_PATIENT_MAX_DISTANCE,
    find_duplicates,
    hamming,
    perceptual_hash,
)
from isnetflow.validation.manifest import read_manifest


@pytest.fixture(scope="module")
def real_set(shared_data: Path) -> tuple[Path, pd.DataFrame]:
    root = shared_data / "real-cxr-lungs"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"{root} is absent")
    return root, pd.read_csv(root / "manifest.csv", dtype=str)


def _normalized(im: Image.Image, size: int = 128) -> np.ndarray:
    pixels = np.asarray(im)
    window = _percentile_window(_robust_sample(pixels), (0.5, 99.5))
    return normalize_letterbox(pixels, window=window, photometric="MONOCHROME2", size=size)[0]


def _captioned_copy(im: Image.Image) -> bytes:
    """The same film with a caption and a marker burned in, resized to 60% and re-encoded as JPEG."""
    im = im.copy()
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.text((w * 0.04, h * 0.92), "day 4", fill=255, font_size=max(10, h // 24))
    d.text((w * 0.88, h * 0.04), "L", fill=255, font_size=max(10, h // 16))
    im = im.resize((int(w * 0.6), int(h * 0.6)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=60)
    return buf.getvalue()


def test_find_duplicates_keeps_the_first_and_picks_the_closest() -> None:
    a, b = 0, (1 << 256) - 1
    near_a, nearer_a = a ^ 0b111, a ^ 0b1
    got = find_duplicates([a, b, near_a, nearer_a, near_a ^ (1 << 200)], max_distance=4)
    assert got == {2: (0, 3), 3: (0, 1), 4: (0, 4)}  # a kept; every copy points at a kept item
    assert find_duplicates([a, near_a], max_distance=2) == {}
    assert find_duplicates([a, near_a], max_distance=4, accept=lambda i, j, d: d < 3) == {}


def test_the_threshold_separates_the_real_films(real_set: tuple[Path, pd.DataFrame]) -> None:
    """The measurement behind the threshold (module docstring), held: no two different films of the real
    set match, not even one patient's own; a captioned, resized, re-encoded copy matches its film."""
    root, m = real_set
    films = [Image.open(root / p).convert("L") for p in m["image"]]
    hashes = [perceptual_hash(_normalized(im)) for im in films]
    patients = list(m["patient_id"])
    closest = {True: 256, False: 256}
    for i in range(len(hashes)):
        for j in range(i):
            same = patients[i] == patients[j]
            closest[same] = min(closest[same], hamming(hashes[i], hashes[j]))
    assert closest[False] > 3 * DUPLICATE_MAX_DISTANCE  # measured 72 (at image_size 64, 128, 256, 512)
    assert closest[True] > 3 * DUPLICATE_MAX_DISTANCE  # measured 58
    copies = [perceptual_hash(_normalized(Image.open(io.BytesIO(_captioned_copy(im))))) for im in films[:12]]
    assert max(hamming(c, h) for c, h in zip(copies, hashes, strict=False)) <= DUPLICATE_MAX_DISTANCE


@pytest.fixture(scope="module")
def dup_run(real_set: tuple[Path, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """All 84 real films (patients split between an internal and an external site), plus copies of the
    first one: under another patient, at the external site with a caption, twice for its own patient."""
    root, m = real_set
    src = tmp_path_factory.mktemp("dups")
    patients = sorted(m["patient_id"].unique(), key=int)
    external = set(patients[len(patients) // 2 :])
    rows = []
    for k, (image, patient) in enumerate(zip(m["image"], m["patient_id"], strict=True)):
        site = "Site B" if patient in external else "Site A"
        rel = f"{site[-1].lower()}/{Path(image).name}"
        (src / rel).parent.mkdir(exist_ok=True)
        shutil.copy(root / image, src / rel)
        rows.append({"path": rel, "label": ("normal", "covid")[k % 2], "patient_id": patient, "site": site})
    first = rows[0]
    film = Image.open(src / first["path"]).convert("L")
    (src / "zz").mkdir()
    film.save(src / "zz" / "other_patient.png", compress_level=1)  # other bytes, the same pixels
    (src / "zz" / "external_caption.jpg").write_bytes(_captioned_copy(film))
    film.save(src / "zz" / "same_patient.png", compress_level=9)
    shutil.copy(src / first["path"], src / "zz" / "byte_copy.png")
    rows += [
        {"path": "zz/other_patient.png", "label": "normal", "patient_id": "dup-1", "site": first["site"]},
        {"path": "zz/external_caption.jpg", "label": "covid", "patient_id": "dup-2", "site": "Site B"},
        {"path": "zz/same_patient.png", "label": first["label"], "patient_id": first["patient_id"],
         "site": first["site"]},
        {"path": "zz/byte_copy.png", "label": "normal", "patient_id": "dup-3", "site": first["site"]},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    assert first["site"] == "Site A"
    cfg = ValidateConfig(
        image_size=128, min_images_per_site=1, workers=1, internal_sites=["Site A"], external_sites=["Site B"]
    )
    out = tmp_path_factory.mktemp("dups_out")
    validate_tree(cfg, src, out, labels=src / "labels.csv")
    manifest = read_manifest(out)
    manifest.attrs["first"] = first["path"]
    manifest.attrs["first_patient"] = first["patient_id"]
    return manifest


def test_copies_are_quarantined_naming_the_kept_file(dup_run: pd.DataFrame) -> None:
    m, first, pid = dup_run, dup_run.attrs["first"], dup_run.attrs["first_patient"]
    q = m[m["status"] == "quarantined"]
    got = dict(zip(q["path"], q["reason_code"], strict=True))
    assert got == {
        "zz/other_patient.png": "duplicate",
        "zz/external_caption.jpg": "duplicate",
        "zz/same_patient.png": "duplicate_same_patient",
        "zz/byte_copy.png": "duplicate_uid",  # the same bytes: the same picture key, caught first
    }
    reasons = dict(zip(m["path"], m["reason"], strict=True))
    assert reasons["zz/other_patient.png"] == (
        f"duplicate image: pixel-identical to {first} (patient dup-1 here, {pid} there)"
    )
    caption = reasons["zz/external_caption.jpg"]
    assert (
        caption.startswith("duplicate image: near-identical (perceptual hash distance ") and first in caption
    )
    assert "site Site B here, Site A there; external here, internal there" in caption
    assert reasons["zz/same_patient.png"] == (
        f"same patient: pixel-identical to {first} of patient {pid}, kept once"
    )
    assert reasons["zz/byte_copy.png"] == f"duplicate SOPInstanceUID (first: {first})"
    assert (q["image"] == "").all()  # a quarantined copy leaves nothing for a later stage


def test_the_real_films_are_all_kept(dup_run: pd.DataFrame) -> None:
    """84 films, 43 patients, two sites: none is taken for another, and the copied film stays valid."""
    m = dup_run
    originals = m[~m["path"].str.startswith("zz/") & (m["status"] != "ignored")]
    assert len(originals) == 84 and (originals["status"] == "valid").all(), originals["reason"].unique()
    assert set(originals["role"]) == {"internal", "external"}


def test_duplicates_can_be_kept(real_set: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, m = real_set
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(root / m["image"][0], src / "a.png")
    Image.open(src / "a.png").save(src / "b.png", compress_level=1)
    labels = [{"path": p, "label": "normal", "patient_id": p[0], "site": "S"} for p in ("a.png", "b.png")]
    pd.DataFrame(labels).to_csv(src / "labels.csv", index=False)
    for action, expected in (("quarantine", ["valid", "quarantined"]), ("keep", ["valid", "valid"])):
        cfg = ValidateConfig(image_size=64, min_images_per_site=1, workers=1, duplicate_images=action)
        run = validate_tree(cfg, src, tmp_path / action, labels=src / "labels.csv")
        images = run.manifest[run.manifest["status"] != "ignored"]
        assert list(images["status"]) == expected
    assert SAME_PATIENT_MAX_DISTANCE < DUPLICATE_MAX_DISTANCE
