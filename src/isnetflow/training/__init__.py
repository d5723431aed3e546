"""Classifier training: data, patient-grouped splits, the resumable loop, checkpoints.

``train(cfg, data, ...)`` is a plain function (no I/O besides checkpoints); the stage
``isnetflow.stages.train`` reads files, tracks with MLflow and logs the model.
"""

from isnetflow.training.data import TrainData
from isnetflow.training.loop import TrainResult, train
from isnetflow.training.splits import assign_splits

__all__ = ["TrainData", "TrainResult", "assign_splits", "train"]
