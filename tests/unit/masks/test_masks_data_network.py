"""Training data (pairing, patient-grouped split, phantom heart region) and weight files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isnetflow.masks import (
    SHIPPED_SPEC,
    SegmenterSpec,
    build_network,
    load_network,
    save_network,
    sha256_file,
)
from isnetflow.masks.data import find_pairs, grouped_split, load_original, synthetic_samples
from isnetflow.masks.network import default_network_kwargs


def _pairs_folder(root: Path, n: int = 8, bad_shape: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "patient_id"])
        for i in range(n):
            Image.fromarray(np.full((32, 40), 100 + i, dtype=np.uint8)).save(root / "images" / f"im{i}.png")
            shape = (30, 40) if bad_shape and i == 0 else (32, 40)
            Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(root / "masks" / f"im{i}.png")
            w.writerow([f"images/im{i}.png", f"masks/im{i}.png", f"p{i // 2}"])
    return root


def test_pairs_and_grouped_split_keep_patients_apart(tmp_path: Path) -> None:
    root = _pairs_folder(tmp_path)
    pairs = find_pairs(root / "images", root / "masks", root / "manifest.csv")
    assert len(pairs) == 8 and pairs[3].patient_id == "p1"
    for seed in range(5):
        train, val = grouped_split(pairs, 0.25, seed)
        assert val and train
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}
        assert len(train) + len(val) == 8
    assert grouped_split(pairs, 0.0, 0) == (pairs, [])


def test_pairs_errors_name_the_problem(tmp_path: Path) -> None:
    root = _pairs_folder(tmp_path, bad_shape=True)
    rows = list(csv.reader((root / "manifest.csv").open()))
    with (root / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows[:-1])  # im7 has no patient
    with pytest.raises(ValueError, match="no patient_id"):
        find_pairs(root / "images", root / "masks", root / "manifest.csv")
    pairs = find_pairs(root / "images", root / "masks")
    with pytest.raises(ValueError, match=r"im0\.png: mask is 30x40 but .*im0\.png is 32x40"):
        load_original(pairs[0])


def test_phantom_heart_region_is_ignored_not_lung() -> None:
    samples = synthetic_samples(3, 96, progress=False)
    for s in samples:
        assert s.source == "synthetic" and s.image.shape == (96, 96)
        assert s.label.sum() > 0 and s.ignore.sum() > 0
        assert not (s.label.astype(bool) & s.ignore.astype(bool)).any()
        # the ignored region sits below the lung apices (the heart), not at the top of the lungs
        top_lung = np.nonzero(s.label.any(axis=1))[0].min()
        assert np.nonzero(s.ignore.any(axis=1))[0].min() > top_lung


@pytest.mark.parametrize("arch", ["unet", "segresnet", "basicunet", "attentionunet"])
def test_every_architecture_builds_and_runs(arch: str) -> None:
    spec = SegmenterSpec(architecture=arch, network=default_network_kwargs(arch, (8, 8, 16, 16, 16)))
    net = build_network(spec).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_save_load_roundtrip_and_tamper_detection(tmp_path: Path) -> None:
    spec = SegmenterSpec(
        architecture="unet", network=default_network_kwargs("unet", (4, 8, 16)), image_size=32
    )
    net = build_network(spec).eval()
    spec_path = save_network(net, spec, tmp_path)
    model, loaded = load_network(spec_path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=2e-2)
    assert loaded.weights_sha256 == sha256_file(tmp_path / "lung_segmenter.pt")
    with (tmp_path / "lung_segmenter.pt").open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 does not match"):
        load_network(tmp_path)


def test_shipped_weights_are_small_and_verified() -> None:
    spec = json.loads(SHIPPED_SPEC.read_text())
    weights = SHIPPED_SPEC.parent / spec["weights_file"]
    assert weights.stat().st_size < 5_000_000
    assert sha256_file(weights) == spec["weights_sha256"]
    assert (SHIPPED_SPEC.parent / "MODEL_CARD.md").is_file()
    assert spec["training"]["validation_images"], "the held-out images must be recorded"


def test_manifest_split_column_fixes_the_split(tmp_path: Path) -> None:
    root = _pairs_folder(tmp_path)
    rows = list(csv.reader((root / "manifest.csv").open()))
    sides = ["train", "train", "val", "val", "train", "train", "train", "train"]  # p1 held out
    with (root / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [[*rows[0], "split"]] + [[*r, s] for r, s in zip(rows[1:], sides, strict=True)]
        )
    pairs = find_pairs(root / "images", root / "masks", root / "manifest.csv")
    for seed, frac in ((0, 0.25), (3, 0.5), (1, 0.0)):  # neither the fraction nor the seed moves it
        train, val = grouped_split(pairs, frac, seed)
        assert [r.name for r in val] == ["im2", "im3"] and len(train) == 6

    def rewrite(split_of: dict[int, str]) -> list[object]:
        with (root / "manifest.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*rows[0], "split"])
            w.writerows([*r, split_of.get(i, "train")] for i, r in enumerate(rows[1:]))
        return find_pairs(root / "images", root / "masks", root / "manifest.csv")  # type: ignore[return-value]

    with pytest.raises(ValueError, match=r"\['p1'\] have images in both train and val"):
        grouped_split(rewrite({2: "val"}), 0.25, 0)  # im3, the same patient, stays in train
    with pytest.raises(ValueError, match=r"fixes the split of 7 image.* not of 1"):
        grouped_split(rewrite({5: ""}), 0.25, 0)
    with pytest.raises(ValueError, match="line 4: split 'test' is not 'train' or 'val'"):
        rewrite({2: "test"})
