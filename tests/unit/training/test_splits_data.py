"""Patient-grouped splits, augmentation determinism and alignment, data loading errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from isnetflow.config import AugmentConfig, TrainConfig
from isnetflow.training import TrainDataError, load_train_data
from isnetflow.training.data import Augmenter
from isnetflow.training.splits import assign_splits


def test_splits_group_patients_and_keep_external_out() -> None:
    pids = [f"P{i // 2}" for i in range(400)]
    roles = ["external" if i >= 300 else "internal" for i in range(400)]
    s = assign_splits(pids, roles, val_fraction=0.2, test_fraction=0.2, seed=1)
    by_patient: dict[str, set[str]] = {}
    for p, sp in zip(pids, s, strict=True):
        by_patient.setdefault(p, set()).add(sp)
    assert all(len(v) == 1 for v in by_patient.values())
    assert set(s[300:]) == {"external"} and "external" not in s[:300]
    frac = {k: s[:300].count(k) / 300 for k in ("train", "val", "test")}
    assert 0.1 < frac["val"] < 0.3 and 0.1 < frac["test"] < 0.3
    # Stable: the same patients keep their split when others are added.
    s2 = assign_splits([*pids, "NEW"], [*roles, "internal"], val_fraction=0.2, test_fraction=0.2, seed=1)
    assert s2[:400] == s


def test_splits_reject_leakage() -> None:
    with pytest.raises(ValueError, match="P1"):
        assign_splits(["P1", "P1"], ["internal", "external"], val_fraction=0.2, test_fraction=0.2)


def test_augmenter_deterministic_and_aligned() -> None:
    aug = Augmenter(AugmentConfig(prob=1.0, noise_std=0.0, gamma=(1.0, 1.0)), seed=3)
    # An asymmetric pattern used as both image and mask: they must stay identical after warping.
    img = torch.zeros(4, 1, 40, 40)
    img[:, :, 4:14, 3:9] = 1.0
    img[:, :, 25:30, 20:38] = 1.0
    a1, m1 = aug(img, img.clone(), [0, 1, 2, 3], epoch=0)
    a2, m2 = aug(img, img.clone(), [0, 1, 2, 3], epoch=0)
    a3, _ = aug(img, img.clone(), [0, 1, 2, 3], epoch=1)
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    assert not torch.equal(a1, a3)
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    agree = ((a1 > 0.5) == (m1 > 0.5)).float().mean()
    assert agree > 0.99
    assert not torch.equal(m1, img), "augmentation with prob=1 must move the pattern"


def test_load_train_data(tiny_validated: Path, tiny_cohort: Path) -> None:
    cfg = TrainConfig(image_size=32, val_fraction=0.3, test_fraction=0.1)
    data = load_train_data(tiny_validated, tiny_cohort / "masks", cfg, classes=["normal", "covid"])
    assert data.images.shape == (48, 1, 32, 32) and data.masks.shape == data.images.shape
    assert set(data.splits) == {"train", "val", "test", "external"}
    internal = {
        "St Aurelia General Hospital",
        "Northfield University Hospital",
        "Riverside Community Hospital",
    }
    for site, split in zip(data.sites, data.splits, strict=True):
        assert (split == "external") == (site not in internal)
    # Lungs (mask) are darker than the rest of the body in every normalized image.
    for img, m in zip(data.images, data.masks, strict=True):
        assert 0.05 < float(m.mean()) < 0.5
        assert img[m > 0].mean() < img[(m == 0) & (img > 0.2)].mean()


def test_load_train_data_names_missing_mask(tiny_validated: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(tiny_cohort / "masks", masks)
    victim = sorted(masks.glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(TrainDataError, match=victim.name):
        load_train_data(tiny_validated, masks, TrainConfig(image_size=32))


def test_load_train_data_rejects_wrong_size_mask(
    tiny_validated: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    from PIL import Image

    masks = tmp_path / "masks"
    shutil.copytree(tiny_cohort / "masks", masks)
    victim = sorted(masks.glob("*.png"))[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(victim)
    with pytest.raises(TrainDataError, match="mask is 10x10"):
        load_train_data(tiny_validated, masks, TrainConfig(image_size=32))


def test_qc_quarantined_masks_are_left_out(tiny_validated: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    import pandas as pd

    masks = tmp_path / "masks"
    shutil.copytree(tiny_cohort / "masks", masks)
    uids = sorted(p.stem for p in masks.glob("*.png"))
    pd.DataFrame(
        {"sop_instance_uid": uids, "status": ["quarantined"] * 3 + ["valid"] * (len(uids) - 3)}
    ).to_csv(masks / "mask_qc.csv", index=False)
    data = load_train_data(tiny_validated, masks, TrainConfig(image_size=32))
    assert len(data) == len(uids) - 3 and not set(uids[:3]) & set(data.keys)
