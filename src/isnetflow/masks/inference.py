"""Batched lung segmentation at the input's original resolution.

:class:`LungSegmenter` wraps a network and its :class:`~isnetflow.masks.spec.SegmenterSpec`. For each
image it normalizes and letterboxes to the network size, predicts lung probabilities, maps them back to
the original pixel grid (:func:`~isnetflow.masks.transforms.from_model_space`), thresholds and
post-processes (two largest components, holes filled). It also returns what quality control needs: the
share of the thresholded area that post-processing dropped near the lungs (a lung split in pieces), a
confidence (mean probability margin ``|2p - 1|`` around the predicted lungs) and, with ``mirror_check``,
the agreement between the mask and the mask of the mirrored image (:func:`mirror_agreement`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize
from scipy import ndimage
from torch import nn

from isnetflow.dicom.normalize import Letterbox

from .metrics import dice
from .network import load_network
from .postprocess import fill_holes, fragment_fraction, keep_largest_components
from .spec import SegmenterSpec
from .transforms import from_model_space, to_model_space

__all__ = ["LungSegmenter", "Prediction", "confidence_margin", "mirror_agreement"]


@dataclass
class Prediction:
    """One image's segmentation."""

    mask: np.ndarray  # bool, original rows x columns, post-processed
    probability: np.ndarray  # float32, network space (letterboxed size x size)
    box: Letterbox  # how the original maps to network space
    fragment_fraction: float  # thresholded area dropped near the lungs (postprocess.fragment_fraction)
    confidence: float  # mean |2p - 1| in a band around the predicted lungs (1 = certain)
    mirror_agreement: float | None = None  # Dice with the mirrored image's mask (mirror_check), else None


def mirror_agreement(prob: np.ndarray, prob_of_mirrored: np.ndarray, threshold: float = 0.5) -> float:
    """Dice between the lungs predicted on an image and on its mirror image, mirrored back (network space).

    A chest radiograph mirrored left-right is still a chest radiograph, so a segmenter that has understood
    the image outlines the same lungs on both; where it is guessing (an arm, the neck, a dense lung it
    only half sees) the two masks part. Two empty predictions agree (1.0).
    """
    return dice(prob > threshold, np.ascontiguousarray(prob_of_mirrored[..., ::-1]) > threshold)


def confidence_margin(prob: np.ndarray, threshold: float = 0.5, band: int = 6) -> float:
    """Mean probability margin ``|2p - 1|`` over the predicted lungs dilated by ``band`` pixels.

    Background far from the lungs is excluded (it is confidently background in almost every image and
    would hide uncertainty); an empty prediction has confidence 0.
    """
    lung = prob > threshold
    if not lung.any():
        return 0.0
    region = ndimage.binary_dilation(lung, iterations=band)
    return float(np.abs(2.0 * prob[region] - 1.0).mean())


class LungSegmenter:
    """A loaded lung segmenter (network + spec) that turns radiographs into lung masks."""

    def __init__(
        self, model: nn.Module, spec: SegmenterSpec, *, batch_size: int = 16, mirror_check: bool = False
    ) -> None:
        """Wrap ``model`` (put in eval mode) with its ``spec``; ``batch_size`` images per forward pass.

        ``mirror_check`` also segments every image mirrored left-right and reports the agreement of the two
        masks (:attr:`Prediction.mirror_agreement`, for the QC); it doubles the network's work.
        """
        self.model = model.eval()
        self.spec = spec
        self.batch_size = batch_size
        self.threshold = spec.threshold
        self.mirror_check = mirror_check

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, batch_size: int = 16, mirror_check: bool = False
    ) -> LungSegmenter:
        """Load from a spec JSON / weights file / folder; None loads the weights shipped in the package."""
        model, spec = load_network(path)
        return cls(model, spec, batch_size=batch_size, mirror_check=mirror_check)

    @property
    def size(self) -> int:
        """Side of the network's square input, in pixels."""
        return self.spec.image_size

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Normalize + letterbox one original-resolution image into network space."""
        return to_model_space(
            image, self.size, percentiles=self.spec.percentiles, pad_value=self.spec.pad_value
        )

    @torch.inference_mode()
    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Lung probabilities for a ``(n, size, size)`` batch in network space."""
        x = torch.as_tensor(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
        logits = self.model(x)
        return torch.sigmoid(logits)[:, 0].numpy()

    def finish(
        self, prob: np.ndarray, box: Letterbox, out_shape: tuple[int, int] | None = None
    ) -> Prediction:
        """Map one network-space probability map to a post-processed mask at the original resolution.

        ``out_shape`` (rows, columns) resizes the unletterboxed probabilities once more, for images that
        were prepared from a downscaled copy of the original (e.g. the validate stage's images).
        """
        full_prob = from_model_space(prob, box)
        if out_shape is not None and tuple(out_shape) != full_prob.shape:
            resized = Resize(tuple(out_shape), mode="bilinear", align_corners=False)(
                torch.as_tensor(full_prob)[None]
            )
            full_prob = np.asarray(resized[0], dtype=np.float32)
        full = full_prob > self.threshold
        kept = keep_largest_components(full)
        fragment = fragment_fraction(full, kept)
        mask = fill_holes(kept) if full.any() else kept
        return Prediction(
            mask=mask,
            probability=prob.astype(np.float32),
            box=box,
            fragment_fraction=float(fragment),
            confidence=confidence_margin(prob, self.threshold),
        )

    def predict_prepared(
        self,
        prepared: Sequence[tuple[np.ndarray, Letterbox]],
        out_shapes: Sequence[tuple[int, int] | None] | None = None,
    ) -> Iterator[Prediction]:
        """Segment images already in network space (from :meth:`prepare`),
        ``batch_size`` at a time; ``out_shapes`` as in :meth:`finish`."""
        shapes = list(out_shapes) if out_shapes is not None else [None] * len(prepared)
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            batch = np.stack([x for x, _ in chunk])
            probs = self.probabilities(batch)
            mirrored = self.probabilities(batch[:, :, ::-1]) if self.mirror_check else None
            for k, (prob, (_, box)) in enumerate(zip(probs, chunk, strict=True)):
                pred = self.finish(prob, box, shapes[start + k])
                if mirrored is not None:
                    pred.mirror_agreement = mirror_agreement(prob, mirrored[k], self.threshold)
                yield pred

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Segment original-resolution images (float, any range; bright = dense)."""
        return list(self.predict_prepared([self.prepare(im) for im in images]))

    def segment(self, image: np.ndarray) -> np.ndarray:
        """The post-processed boolean lung mask of one image at its original resolution."""
        return self.predict([image])[0].mask
