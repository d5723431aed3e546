"""Training data held in memory at the training resolution, with seeded MONAI augmentation.

The cohort is small enough (thousands of 128-256 px images) to keep as tensors, which makes every
epoch cheap and the augmentation a pure function of (seed, epoch, sample index). That is what lets a
killed run resume to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import AffineTransform
from PIL import Image

from isnetflow.config import AugmentConfig, SynthConfig
from isnetflow.training.splits import assign_splits
from isnetflow.training.streams import mix_seed

__all__ = ["Augmenter", "TrainData", "from_synthetic", "load_array", "resize_pair", "shortcut_free_inputs"]


@dataclass
class TrainData:
    """Images ``(N, 1, S, S)`` float32 in [0, 1] (bright = dense), masks ``(N, 1, S, S)`` float {0, 1}."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor  # (N,) long class indices
    classes: list[str]
    patient_ids: list[str]
    sites: list[str]
    splits: list[str]  # train | val | test | external
    keys: list[str] = field(default_factory=list)  # e.g. SOPInstanceUID, for lineage and reports

    def __post_init__(self) -> None:
        """Check that every field has one entry per image; default ``keys`` to the image indices."""
        n = self.images.shape[0]
        if not (self.masks.shape == self.images.shape and self.labels.shape == (n,)):
            raise ValueError(
                f"inconsistent shapes: images {tuple(self.images.shape)}, masks {tuple(self.masks.shape)}, "
                f"labels {tuple(self.labels.shape)}"
            )
        for name in ("patient_ids", "sites", "splits"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} images")
        if not self.keys:
            self.keys = [str(i) for i in range(n)]

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def indices(self, *splits: str) -> np.ndarray:
        """Indices of the images in any of ``splits``, ascending."""
        return np.array([i for i, s in enumerate(self.splits) if s in splits], dtype=np.int64)


def load_array(path: str | Path) -> np.ndarray:
    """Read a normalized image or mask (.npy or PNG) as float32 in [0, 1].

    Integer storage is scaled by its type's range (uint16: 65535, uint8: 255); floats are returned as is.
    """
    p = Path(path)
    arr = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.asarray(Image.open(p))
    if arr.ndim == 3:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    return arr.astype(np.float32)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image (bilinear, antialiased) and its mask (nearest) to ``size x size``."""
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    msk = torch.from_numpy(np.ascontiguousarray(mask > 0.5, dtype=np.float32))[None, None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    msk = F.interpolate(msk, size=(size, size), mode="nearest")
    return img[0].clamp(0, 1), msk[0]


class Augmenter:
    """Batched augmentation of (image, mask), deterministic for a given (seed, epoch, sample index).

    Per-sample parameters are drawn from a NumPy generator seeded by (seed, epoch, index), so a batch's
    augmentation does not depend on what ran before it (exact resume). Geometry goes through one
    call of MONAI's batched :class:`~monai.networks.layers.AffineTransform` (bilinear for images,
    thresholded for masks); intensity: gamma (contrast) and Gaussian noise.
    """

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        """``cfg``: the augmentation settings; ``seed``: the training's seed."""
        self.cfg = cfg
        self.seed = seed
        self._warp = AffineTransform(
            normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def params(self, index: int, epoch: int) -> dict[str, float]:
        """Sample ``index``'s augmentation parameters at ``epoch`` (identity values where a part is off)."""
        c = self.cfg
        rng = np.random.default_rng(mix_seed(self.seed, epoch, int(index)))
        on = rng.random(3) < c.prob
        u = rng.uniform(-1.0, 1.0, size=4)
        return {
            "angle": float(np.deg2rad(c.rotate_deg) * u[0] * on[0]),
            "zoom": float(1.0 + c.scale * u[1] * on[0]),
            "tx": float(2 * c.translate * u[2] * on[0]),
            "ty": float(2 * c.translate * u[3] * on[0]),
            "gamma": float(rng.uniform(*c.gamma)) if on[1] else 1.0,
            "noise": float(c.noise_std * on[2]),
            "noise_seed": int(rng.integers(0, 2**31 - 1)),
        }

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, indices: Sequence[int], epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented ``(images, masks)`` of a batch whose samples have dataset ``indices``."""
        ps = [self.params(int(i), epoch) for i in indices]
        theta = torch.zeros(len(ps), 2, 3, dtype=torch.float32)
        for k, p in enumerate(ps):
            ca, sa = np.cos(p["angle"]) / p["zoom"], np.sin(p["angle"]) / p["zoom"]
            theta[k] = torch.tensor([[ca, -sa, p["tx"]], [sa, ca, p["ty"]]], dtype=torch.float32)
        theta = theta.to(images.device)
        # One grid for image and mask; the mask is resampled bilinearly and thresholded at 0.5.
        warped = self._warp(torch.cat([images, masks.to(images.dtype)], dim=1), theta)
        img, msk = warped[:, :-1], warped[:, -1:]
        gamma = torch.tensor([p["gamma"] for p in ps], dtype=images.dtype, device=images.device)
        img = img.clamp(0, 1) ** gamma.view(-1, 1, 1, 1)
        noise = torch.stack(
            [
                torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(int(p["noise_seed"])))
                * p["noise"]
                for p in ps
            ]
        ).to(images.device)
        return (img + noise).clamp(0, 1), (msk > 0.5).to(masks.dtype)


def shortcut_free_inputs(
    images: torch.Tensor,
    masks: torch.Tensor,
    how: str,
    generator: torch.Generator | None = None,
    *,
    background_scale: float = 1.0,
) -> torch.Tensor:
    """Inputs whose background carries no label information, for the ISNet's standard warm-up.

    ``"background_swap"``: each image keeps its lungs and takes the background of another image of the
    batch (a random derangement, so the donor's label is independent of the recipient's), with the
    construction of the counterfactual test (:func:`isnetflow.audit.counterfactual.swap_background`):
    the recipient's pixels inside the union of both lung masks, the donor's outside, so none of the
    donor's lungs survive. ``"masked"``: the lungs only (background zero). ``"raw"``: unchanged.
    ``background_scale`` (swap only) scales the donor's pixels: 0 leaves the union of the lungs on black,
    1 (default) is the full composite (``train.background_fade_epochs``).
    """
    if how == "raw":
        return images
    if how == "masked":
        return images * masks
    if how != "background_swap":
        raise ValueError(f"unknown warm-up inputs {how!r}: raw, background_swap or masked")
    n = images.shape[0]
    if n < 2:
        return images
    order = torch.randperm(n, generator=generator).to(images.device)
    donor = torch.empty_like(order)
    donor[order] = order.roll(-1)  # cyclic shift of a random permutation: nobody is their own donor
    region = (masks > 0.5) | (masks[donor] > 0.5)
    background = images[donor] if background_scale == 1.0 else background_scale * images[donor]
    return torch.where(region, images, background)


def from_synthetic(
    synth: SynthConfig, size: int, *, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0
) -> TrainData:
    """Render a synthetic cohort straight into memory (no DICOM round trip), for tests and experiments.

    Images are the generator's presentation images (bright = dense, [0, 1]), which is what the ingest
    stage's normalization produces from the DICOM files; masks are the ground-truth lungs. Both are
    letterboxed to ``size`` like the ingest stage does.
    """
    from isnetflow.synth import plan_cohort, render_item

    plan = plan_cohort(synth)
    role = {s.name: s.role for s in synth.sites}
    imgs, msks = [], []
    for item in plan:
        r = render_item(item, synth)
        img, msk = _square(r.presentation), _square(r.lung.astype(np.float32))
        i, m = resize_pair(img, msk, size)
        imgs.append(i)
        msks.append(m)
    classes = list(synth.classes)
    splits = assign_splits(
        [p.patient_id for p in plan],
        [role[p.site] for p in plan],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return TrainData(
        images=torch.stack(imgs),
        masks=torch.stack(msks),
        labels=torch.tensor([classes.index(p.label) for p in plan], dtype=torch.long),
        classes=classes,
        patient_ids=[p.patient_id for p in plan],
        sites=[p.site for p in plan],
        splits=splits,
        keys=[p.sop_uid for p in plan],
    )


def _square(a: np.ndarray) -> np.ndarray:
    """Centred zero padding to a square (the ingest stage's letterbox geometry)."""
    rows, cols = a.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    out = np.zeros((side, side), dtype=np.float32)
    out[top : top + rows, left : left + cols] = a
    return out
