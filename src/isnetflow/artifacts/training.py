"""``train_summary.json``: what the train stage records about one trained model (:class:`TrainSummary`).

Written by the train stage (:mod:`isnetflow.stages.train`) beside ``model.pt`` and as an artifact of the
training's MLflow run; read by the model loader (a local ``model.pt``'s facts,
:mod:`isnetflow.registry.classifier`), the pipeline tasks and the local run's summary. A file of an
older version may lack fields (``None`` here): the loader falls back on the settings for those it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from isnetflow.artifacts import Artifact

__all__ = ["TRAIN_SUMMARY_FILE", "TrainJobInfo", "TrainSummary"]

#: the file name, in the model's folder and among the training run's artifacts
TRAIN_SUMMARY_FILE = "train_summary.json"


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
