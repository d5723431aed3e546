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
from typing import TYPE_CHECKING, Any

from isnetflow.training.data import TrainData
from isnetflow.training.inputs import TrainDataError, load_train_data

if TYPE_CHECKING:
    from isnetflow.registry.packaging import LoadedClassifier

__all__ = ["EVALUATION_FILE", "EvaluateStageError", "load_evaluation", "load_evaluation_data"]

EVALUATION_FILE = "evaluation.json"


class EvaluateStageError(ValueError):
    """Inputs of the evaluate stage cannot be used (message names the file/URI and the problem)."""


def load_evaluation_data(
    validated: str | Path, masks: str | Path | None, loaded: LoadedClassifier
) -> TrainData:
    """The validated images at the model's resolution with the training run's split assignment."""
    try:
        return load_train_data(validated, masks, loaded.facts.train_config(), classes=loaded.facts.classes)
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
