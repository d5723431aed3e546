"""Input geometry, intensity normalization and MONAI augmentation for the lung segmenter.

Inference and training share one preprocessing path (:func:`to_model_space`):

1. a robust per-image intensity window: the ``percentiles`` of the original image map to 0 and 1
   (clipped), so exposure, bit depth and VOI choices of a site do not matter;
2. a centred letterbox to a square (padding = 0 = air, the convention of the validate stage, see
   :class:`isnetflow.dicom.Letterbox`), then an area (anti-aliased) resize to ``size`` x ``size``.

:func:`from_model_space` maps a probability map back to the original pixel grid (bilinear resize of
the padded square, then crop), so masks are written at the input's original resolution.

Training augmentation (:func:`train_transforms`) targets transfer to other hospitals: photometric
(gamma/contrast, histogram shifts, bias field, blur or sharpening, noise, burned-in marker-like
blocks), then a re-normalization (as at inference), then geometry (isotropic zoom-out to mimic small
paediatric or wide-field lungs, mild zoom-in, small rotation/shear/anisotropic scale, translation)
and collimation (shuttered borders, black or white). There are no flips: the heart is on the
patient's left and the masks' retro-cardiac convention is side-specific.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Identityd,
    MapTransform,
    OneOf,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCoarseDropoutd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandomizableTransform,
    RandZoomd,
    Resize,
    ScaleIntensityRangePercentilesd,
)

from isnetflow.dicom.normalize import Letterbox

__all__ = [
    "Augmentation",
    "RandCollimationd",
    "from_model_space",
    "intensity_window",
    "to_model_space",
    "train_transforms",
]

Augmentation = Literal["none", "light", "strong"]

#: Percentiles are estimated on at most about this many pixels (a regular sub-grid).
_SAMPLES = 1 << 18


def intensity_window(image: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The (low, high) values of ``image`` at the given percentiles (on a regular sub-grid when large)."""
    step = max(1, int(np.ceil(np.sqrt(image.size / _SAMPLES))))
    lo, hi = np.percentile(image[::step, ::step], percentiles)
    return float(lo), float(hi)


def to_model_space(
    image: np.ndarray,
    size: int,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    pad_value: float = 0.0,
) -> tuple[np.ndarray, Letterbox]:
    """Normalize and letterbox a 2-D image (any range) into a float32 ``size`` x ``size`` array.

    Returns the array and the :class:`~isnetflow.dicom.Letterbox` needed to map results back.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    lo, hi = intensity_window(image, percentiles)
    span = hi - lo if hi > lo else 1.0
    box = Letterbox.for_shape(int(image.shape[0]), int(image.shape[1]), size)
    raw = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))
    # Pad with the value that normalizes to `pad_value`; normalization is linear, so it commutes with
    # the (linear) area resize, which is done first on the raw values.
    fill = lo + pad_value * span
    padded = torch.nn.functional.pad(
        raw[None], (box.pad_left, box.pad_right, box.pad_top, box.pad_bottom), mode="constant", value=fill
    )
    small = Resize((size, size), mode="area")(padded)
    out = torch.clamp((torch.as_tensor(small) - lo) / span, 0.0, 1.0)
    return out[0].numpy().astype(np.float32, copy=False), box


def from_model_space(prob: np.ndarray | torch.Tensor, box: Letterbox) -> np.ndarray:
    """Map a ``size`` x ``size`` map (probabilities) back to the original ``rows`` x ``columns`` grid."""
    t = torch.as_tensor(prob, dtype=torch.float32)
    if t.shape != (box.size, box.size):
        raise ValueError(f"expected shape {(box.size, box.size)}, got {tuple(t.shape)}")
    square = Resize((box.side, box.side), mode="bilinear", align_corners=False)(t[None])
    full = torch.as_tensor(square)[
        0, box.pad_top : box.pad_top + box.rows, box.pad_left : box.pad_left + box.columns
    ]
    return full.numpy().astype(np.float32, copy=False)


class RandCollimationd(RandomizableTransform, MapTransform):
    """Shutter random image borders, as collimation or electronic shutters do on real radiographs.

    Each side is shuttered with probability ``side_prob`` by a band of up to ``max_fraction`` of the
    image; the band is filled with black (0) or white (1) in the image. Masks: ``label_keys`` are set to
    0 in the band (no lung is visible there) and ``ignore_keys`` to 0 (the band is supervised).
    """

    def __init__(
        self,
        image_key: str,
        label_keys: str | Sequence[str] = (),
        ignore_keys: str | Sequence[str] = (),
        prob: float = 0.3,
        side_prob: float = 0.5,
        max_fraction: float = 0.15,
    ) -> None:
        """``prob``: chance that an image is shuttered at all; the rest as in the class docstring."""
        keys = [image_key, *_as_list(label_keys), *_as_list(ignore_keys)]
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.image_key = image_key
        self.label_keys = _as_list(label_keys)
        self.ignore_keys = _as_list(ignore_keys)
        self.side_prob = side_prob
        self.max_fraction = max_fraction
        self._bands: list[tuple[int, float]] = []
        self._fill = 0.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to shutter, the shuttered sides with their band widths, and the fill value."""
        super().randomize(None)
        self._bands = [
            (side, float(self.R.uniform(0.02, self.max_fraction)))
            for side in range(4)
            if self.R.random() < self.side_prob
        ]
        self._fill = float(self.R.choice([0.0, 1.0]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A copy of ``data`` with new random bands applied to the image and masks (or unchanged)."""
        d = dict(data)
        self.randomize()
        if not self._do_transform or not self._bands:
            return d
        h, w = d[self.image_key].shape[-2:]
        band = torch.zeros((h, w), dtype=torch.bool)
        for side, frac in self._bands:
            n = max(1, int(frac * (h if side < 2 else w)))
            if side == 0:
                band[:n] = True
            elif side == 1:
                band[h - n :] = True
            elif side == 2:
                band[:, :n] = True
            else:
                band[:, w - n :] = True
        for key, value in [(self.image_key, self._fill)] + [
            (k, 0.0) for k in self.label_keys + self.ignore_keys
        ]:
            arr = torch.as_tensor(d[key]).clone()
            arr[..., band] = value
            d[key] = arr
        return d


def _as_list(keys: str | Sequence[str]) -> list[str]:
    return [keys] if isinstance(keys, str) else [str(k) for k in keys]


def train_transforms(
    size: int, strength: Augmentation = "strong", percentiles: tuple[float, float] = (0.5, 99.5)
) -> Compose:
    """Dict transforms for training on ``{"image", "label", "ignore"}`` channel-first ``size``² tensors.

    ``image`` is float in [0, 1] (already normalized and letterboxed); ``label`` is the lung (0/1) and
    ``ignore`` marks pixels excluded from the loss (0/1). Geometric transforms move all three
    (nearest-neighbour for the masks); padding is 0 everywhere (air; supervised background).
    """
    keys = ["image", "label", "ignore"]
    if strength == "none":
        return Compose([])
    light = strength == "light"
    shift = (0.05 if light else 0.12) * size
    return Compose(
        [
            # Photometric: site tone curves, detector response, processing, burned-in markers.
            RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5) if light else (0.45, 2.2)),
            RandHistogramShiftd("image", prob=0.0 if light else 0.3, num_control_points=(5, 12)),
            RandBiasFieldd("image", prob=0.3, degree=3, coeff_range=(0.0, 0.15 if light else 0.35)),
            OneOf(
                [
                    RandGaussianSmoothd("image", prob=1.0, sigma_x=(0.3, 1.8), sigma_y=(0.3, 1.8)),
                    RandGaussianSharpend(
                        "image",
                        prob=1.0,
                        sigma1_x=(0.5, 1.0),
                        sigma1_y=(0.5, 1.0),
                        sigma2_x=0.5,
                        sigma2_y=0.5,
                        alpha=(2.0, 12.0),
                    ),
                    Identityd("image"),
                ],
                weights=[0.3, 0.2, 0.5],
            ),
            RandGaussianNoised("image", prob=0.4, mean=0.0, std=0.03 if light else 0.1),
            RandCoarseDropoutd(
                "image",
                prob=0.0 if light else 0.25,
                holes=1,
                max_holes=4,
                spatial_size=(5, 5),
                max_spatial_size=(18, 18),
                fill_value=(0.85, 1.0),
            ),
            # Back to the inference-time intensity range (a linear change cannot teach anything).
            ScaleIntensityRangePercentilesd(
                "image", lower=percentiles[0], upper=percentiles[1], b_min=0.0, b_max=1.0, clip=True
            ),
            # Geometry: lung size (paediatric / wide field), positioning, aspect, collimation.
            RandZoomd(
                keys,
                prob=0.6,
                min_zoom=0.8 if light else 0.5,
                max_zoom=1.1 if light else 1.15,
                mode=["area", "nearest", "nearest"],
                padding_mode="constant",
                keep_size=True,
            ),
            RandAffined(
                keys,
                prob=0.7,
                rotate_range=(float(np.deg2rad(6 if light else 10)),),
                shear_range=(0.03, 0.03) if light else (0.06, 0.06),
                scale_range=((-0.06, 0.06), (-0.06, 0.06)) if light else ((-0.1, 0.1), (-0.1, 0.1)),
                translate_range=((-shift, shift), (-shift, shift)),
                mode=["bilinear", "nearest", "nearest"],
                padding_mode="zeros",
            ),
            RandCollimationd("image", label_keys="label", ignore_keys="ignore", prob=0.0 if light else 0.3),
        ]
    )
