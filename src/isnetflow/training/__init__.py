"""Classifier training: data, patient-grouped splits, the resumable loop, checkpoints.

``train(cfg, data, ...)`` is a plain function (no I/O besides checkpoints); ``load_train_data`` reads the
validate stage's folder and the lung masks (:mod:`isnetflow.training.inputs`); the stage
``isnetflow.stages.train`` tracks with MLflow and logs the model.
"""

from isnetflow.training.data import TrainData
from isnetflow.training.inputs import TrainDataError, load_train_data
from isnetflow.training.loop import TrainResult, train
from isnetflow.training.splits import assign_splits

__all__ = ["TrainData", "TrainDataError", "TrainResult", "assign_splits", "load_train_data", "train"]
