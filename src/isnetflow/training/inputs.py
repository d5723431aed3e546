"""The classifier's training inputs: the validate stage's folder and the lung masks, read into a
:class:`~isnetflow.training.data.TrainData`.

:func:`load_train_data` is what the train stage trains on and what the evaluate stage (and the promote
stage, for the champion) evaluates on, so both see exactly the same images, masks and split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from isnetflow.config import TrainConfig
from isnetflow.dicom.normalize import letterbox
from isnetflow.training.data import TrainData, load_array, resize_pair
from isnetflow.training.splits import apply_held_out, assign_splits
from isnetflow.validation.manifest import ManifestError, read_manifest

log = logging.getLogger(__name__)

__all__ = ["TrainDataError", "load_train_data"]


class TrainDataError(ValueError):
    """The inputs cannot form a training set (message names the file and the problem)."""


def _excluded_by_qc(masks: Path) -> set[str]:
    """SOP UIDs whose mask failed QC, from ``mask_qc.csv`` in the masks folder or beside it."""
    candidates = [masks / "mask_qc.csv", masks.parent / "mask_qc.csv"]
    qc = next((c for c in candidates if c.is_file()), None)
    if qc is None:
        return set()
    df = pd.read_csv(qc, dtype=str).fillna("")
    if "status" not in df or "sop_instance_uid" not in df:
        raise TrainDataError(f"{qc}: expected columns sop_instance_uid and status")
    return set(df.loc[~df["status"].isin(["ok", "valid"]), "sop_instance_uid"])


def load_train_data(
    validated: str | Path,
    masks: str | Path | None,
    cfg: TrainConfig,
    *,
    classes: list[str] | None = None,
    held_out: Mapping[str, str] | None = None,
) -> TrainData:
    """Read valid manifest rows with their normalized images and masks into a :class:`TrainData`.

    Masks come from ``masks/<SOPInstanceUID>.png`` or, when ``masks`` is ``None``, from the manifest's
    ``mask`` column (masks provided with the labels). Sites without a role are internal.

    The split is computed from ``cfg`` (seed and fractions, :func:`assign_splits`), unless ``held_out``
    gives it: ``{patient_id: split}`` from a training run's ``splits.csv`` (:func:`apply_held_out`).
    """
    validated = Path(validated)
    manifest_path = validated / "manifest.csv"
    try:  # typed, valid rows only: quarantined files (sidecars, DICOMDIR, ...) never reach training
        df = read_manifest(validated, valid_only=True)
    except ManifestError as exc:
        raise TrainDataError(str(exc)) from exc
    df = df.sort_values("path").reset_index(drop=True)
    masks_dir = Path(masks) if masks is not None else None
    skipped = _excluded_by_qc(masks_dir) if masks_dir is not None else set()
    if skipped:
        log.info("leaving out %d images whose lung mask failed QC", len(skipped))
        df = df[~df["sop_instance_uid"].isin(skipped)].reset_index(drop=True)
    if df.empty:
        raise TrainDataError(f"{manifest_path}: no valid images to train on")
    if classes is None:
        found = sorted(df["label"].unique())
        classes = sorted(found, key=lambda c: (c != "normal", c))
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise TrainDataError(f"{manifest_path}: labels {unknown} not in classes {classes}")

    imgs, msks = [], []
    for row in df.itertuples(index=False):
        image_file = validated / str(row.image)
        if masks_dir is not None:
            mask_file = masks_dir / f"{row.sop_instance_uid}.png"
        elif row.mask:
            mask_file = Path(str(row.mask))
        else:
            raise TrainDataError(f"{row.path}: no lung mask (give --masks or a mask column in labels.csv)")
        if not mask_file.is_file():
            raise TrainDataError(f"{mask_file}: lung mask for {row.path} not found")
        mask = np.asarray(Image.open(mask_file))
        if mask.ndim == 3:
            mask = mask[..., 0]
        size: tuple[Any, Any] = (row.rows, row.columns)  # Int64: <NA> when the header had none
        if any(pd.isna(v) for v in size):
            raise TrainDataError(f"{manifest_path}: {row.path}: valid row without rows/columns")
        rows, cols = int(size[0]), int(size[1])
        if mask.shape != (rows, cols):
            raise TrainDataError(
                f"{mask_file}: mask is {mask.shape[0]}x{mask.shape[1]}, image {row.path} is {rows}x{cols}"
            )
        boxed, _ = letterbox((mask > 127).astype(np.float32), cfg.image_size, resample="nearest")
        image, mask_t = resize_pair(load_array(image_file), boxed, cfg.image_size)
        imgs.append(image)
        msks.append(mask_t)
    roles = [r if r in ("internal", "external") else "internal" for r in df["role"]]
    patients = list(df["patient_id"])
    try:
        splits = (
            assign_splits(
                patients, roles, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
            )
            if held_out is None
            else apply_held_out(patients, roles, held_out)
        )
    except ValueError as exc:
        raise TrainDataError(f"{manifest_path}: {exc}") from exc
    return TrainData(
        images=torch.stack(imgs),
        masks=torch.stack(msks),
        labels=torch.tensor([classes.index(v) for v in df["label"]], dtype=torch.long),
        classes=classes,
        patient_ids=patients,
        sites=list(df["site"]),
        splits=splits,
        keys=list(df["sop_instance_uid"]),
    )
