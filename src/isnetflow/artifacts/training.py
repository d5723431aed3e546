"""``train_summary.json``: what the train stage records about one trained model (:class:`TrainSummary`).

Written by the train stage (:mod:`isnetflow.stages.train`) beside ``model.pt`` and as an artifact of the
training's MLflow run; read by the model loader (a local ``model.pt``'s facts,
:mod:`isnetflow.registry.classifier`), the pipeline tasks and the local run's summary. A file of an
older version may lack fields (``None`` here): the loader falls back on the settings for those it needs.

When a training learned the disease is recorded with it (:func:`learning_milestones`, the one yardstick,
read by the train stage, the run's table and ``isnetflow bench seeds``): a model whose relevance stays
inside the lungs but whose cross-entropy never fell has not learned the disease, whatever its heatmaps
show.

* ``ce_below_half_epoch``: the first epoch (0-based) whose mean training cross-entropy is below
  :data:`CE_LEARNED` (``None``: never), counted from the ISNet phase's first epoch where there is one (the
  warm-up trains on other inputs: the authors' raw warm-up falls below 0.5 within an epoch or two, on the
  shortcut);
* ``learned_early``: whether that epoch lies within the first third of the ISNet phase (epochs
  ``isnet_start`` to ``epochs - 1``; with the defaults, 4 to 15 of 40). ``None`` for a training without an
  ISNet phase (the standard model, the lungs-only reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from isnetflow.artifacts import Artifact

__all__ = [
    "CE_LEARNED",
    "TRAIN_SUMMARY_FILE",
    "TrainJobInfo",
    "TrainSummary",
    "learned_line",
    "learning_milestones",
]

#: the file name, in the model's folder and among the training run's artifacts
TRAIN_SUMMARY_FILE = "train_summary.json"

CE_LEARNED = 0.5
"""Training cross-entropy below which a binary classifier counts as having learned (chance is ln 2, 0.69)."""


def learning_milestones(
    train_ce: Sequence[float | None], isnet_start: int | None, epochs: int
) -> dict[str, Any]:
    """``ce_below_half_epoch`` and ``learned_early`` of one training (the module docstring); ``train_ce`` has
    one value per epoch (``None`` where an epoch has none)."""
    start = isnet_start or 0
    first = next((e for e, v in enumerate(train_ce) if e >= start and v is not None and v < CE_LEARNED), None)
    early: bool | None = None
    if isnet_start is not None:
        phase = max(0, epochs - isnet_start)
        early = first is not None and first < isnet_start + math.ceil(phase / 3)
    return {"ce_below_half_epoch": first, "learned_early": early}


def learned_line(ce_below_half_epoch: int | None, learned_early: bool | None) -> str:
    """The milestone as a table cell: ``"12 (early)"``, ``"20"`` or ``"never"``."""
    if ce_below_half_epoch is None:
        return "never"
    return f"{ce_below_half_epoch} (early)" if learned_early else str(ce_below_half_epoch)


class TrainJobInfo(Artifact):
    """The Kubeflow Trainer TrainJob that trained the model (distributed trainings only)."""

    name: str | None = None
    namespace: str | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None


class TrainSummary(Artifact):
    """One training's summary (the fields in the order the file lists them)."""

    TITLE: ClassVar[str] = "the training summary"

    mode: str | None = None
    run_id: str | None = None
    #: the run's model (``runs:/<run_id>/model``) and MLflow's logged-model URI of it
    model_uri: str | None = None
    logged_model_uri: str | None = None
    best_epoch: int | None = None
    best_val_auc: float | None = None
    #: the ISNet's foreground range (``None``: a standard model)
    C1: float | None = None
    C2: float | None = None
    global_steps: int | None = None
    #: when it learned (:func:`learning_milestones`): the first epoch with training cross-entropy
    #: below 0.5 (``None``: never, or a summary written before the field) and, for an ISNet, whether that
    #: was within the first third of its ISNet phase
    ce_below_half_epoch: int | None = None
    learned_early: bool | None = None
    wall_seconds: float | None = None
    device: str | None = None
    processes: int | None = None
    #: images per split (train, val, test, external)
    splits: dict[str, int] | None = None
    #: the held-out patient list beside the model and its SHA-256 (the run parameter ``data.splits_sha256``)
    splits_file: str | None = None
    splits_sha256: str | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    seed: int | None = None
    #: the class order (the first is the negative class)
    classes: list[str] | None = None
    image_size: int | None = None
    #: the network's name in :data:`isnetflow.nets.NETS`
    model: str | None = None
    #: the pickled model on this machine (``None``: it stayed in MLflow, a TrainJob's)
    local_model: str | None = None
    tracking_outages: int | None = None
    trainjob: TrainJobInfo | None = None

    @classmethod
    def read_from(cls, folder: str | Path) -> TrainSummary:
        """The summary in ``folder`` (:data:`TRAIN_SUMMARY_FILE`)."""
        return cls.read(Path(folder) / TRAIN_SUMMARY_FILE)

    def write_to(self, folder: str | Path) -> Path:
        """Write the summary into ``folder`` as :data:`TRAIN_SUMMARY_FILE`; returns its path."""
        return self.write(Path(folder) / TRAIN_SUMMARY_FILE)
