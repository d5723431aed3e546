"""The evaluate stage's file side, shared with the promote stage: the data a classifier is evaluated on
and the ``evaluation.json`` it writes.

* :func:`load_evaluation_data` -- the validated images and masks at the model's resolution, split exactly
  as its training run split them (the promote stage evaluates the champion with it too);
* :func:`load_evaluation` -- an ``evaluation.json`` read back (how ``isnetflow promote`` takes the
  candidate's evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isnetflow.config import TrainConfig
from isnetflow.evaluation.keys import EVALUATION_FILE
from isnetflow.training.data import TrainData
from isnetflow.training.inputs import TrainDataError, load_train_data

__all__ = ["EVALUATION_FILE", "EvaluateStageError", "load_evaluation", "load_evaluation_data"]


class EvaluateStageError(ValueError):
    """Inputs of the evaluate stage cannot be used (message names the file/URI and the problem)."""


def load_evaluation_data(
    validated: str | Path, masks: str | Path | None, train_cfg: TrainConfig, classes: list[str]
) -> TrainData:
    """The validated images at the model's resolution with the training run's split assignment.

    ``train_cfg`` and ``classes`` are the model's (``LoadedClassifier.facts.train_config()`` and
    ``.facts.classes``): the split, the resolution and the class order it was trained with."""
    try:
        return load_train_data(validated, masks, train_cfg, classes=classes)
    except (TrainDataError, FileNotFoundError) as exc:
        raise EvaluateStageError(str(exc)) from exc


def load_evaluation(path_or_dir: str | Path) -> dict[str, Any]:
    """Read an ``evaluation.json`` (or the folder holding one); errors name the file."""
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / EVALUATION_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluateStageError(f"{p}: cannot read the evaluation: {exc}") from exc
    if not isinstance(data, dict) or "splits" not in data:
        raise EvaluateStageError(f"{p}: not an isnetflow evaluation (no 'splits')")
    return data
