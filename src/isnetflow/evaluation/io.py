"""The evaluate stage's file side, shared with the promote stage: the data a classifier is evaluated on
and the ``evaluation.json`` it writes.

* :func:`held_out_split` -- the training run's held-out patient list (``splits.csv``) checked against its
  recorded digest, or, for a model trained before the list was stored, a refusal unless the split may be
  recomputed;
* :func:`load_evaluation_data` -- the validated images and masks at the model's resolution, split exactly
  as its training run split them (the promote stage evaluates the champion with it too);
* :func:`load_evaluation` -- an ``evaluation.json`` read back as the typed
  :class:`~isnetflow.artifacts.evaluation.EvaluationReport` (how ``isnetflow promote`` takes the
  candidate's evaluation), its error the evaluate stage's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from isnetflow.artifacts import ArtifactError
from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluationReport
from isnetflow.config import TrainConfig
from isnetflow.training.data import TrainData
from isnetflow.training.inputs import TrainDataError, load_train_data
from isnetflow.training.splitfile import SPLITS_FILE, SplitFileError, parse_splits, split_of_patient

__all__ = [
    "EVALUATION_FILE",
    "EvaluateStageError",
    "HeldOut",
    "held_out_split",
    "load_evaluation",
    "load_evaluation_data",
]


class EvaluateStageError(ValueError):
    """Inputs of the evaluate stage cannot be used (message names the file/URI and the problem)."""


@dataclass(frozen=True)
class HeldOut:
    """The split an evaluation uses: the training run's stored list, or recomputed (``patients`` None)."""

    patients: dict[str, str] | None
    file: str = ""
    sha256: str = ""

    @property
    def recomputed(self) -> bool:
        """True when the split was recomputed from the settings (no ``splits.csv`` recorded)."""
        return self.patients is None


def held_out_split(content: bytes | None, sha256: str, location: str, *, recompute: bool) -> HeldOut:
    """The training run's ``splits.csv`` (``content``, found at ``location``) checked against the digest it
    recorded (``sha256``).

    A recorded digest with no file, or a file whose digest differs, is refused. A model that recorded none
    (trained before the list was stored) is refused too unless ``recompute`` (``evaluate.recompute_split``):
    then the split is recomputed from its seed and fractions (:class:`HeldOut` with ``patients`` None).
    """
    if sha256:
        if content is None:
            raise EvaluateStageError(
                f"{location}: not found, but the training run recorded its held-out patient list "
                f"(SHA-256 {sha256[:12]}...)"
            )
        try:
            rows = parse_splits(content, expected_sha256=sha256, source=location)
        except SplitFileError as exc:
            raise EvaluateStageError(str(exc)) from exc
        return HeldOut(split_of_patient(rows), location, sha256)
    if not recompute:
        raise EvaluateStageError(
            f"{location or 'the model'}: the model has no stored held-out patient list ({SPLITS_FILE}; "
            "trained before it was recorded): set evaluate.recompute_split (--recompute-split) to evaluate "
            "it on a split recomputed from its seed and fractions"
        )
    return HeldOut(None)


def load_evaluation_data(
    validated: str | Path,
    masks: str | Path | None,
    train_cfg: TrainConfig,
    classes: list[str],
    held_out: Mapping[str, str] | None = None,
) -> TrainData:
    """The validated images at the model's resolution with the training run's split assignment.

    ``train_cfg`` and ``classes`` are the model's (``LoadedClassifier.facts.train_config()`` and
    ``.facts.classes``): the resolution and the class order it was trained with. ``held_out``
    (:attr:`HeldOut.patients`) is its stored split; ``None`` recomputes it from ``train_cfg``'s seed and
    fractions."""
    try:
        return load_train_data(validated, masks, train_cfg, classes=classes, held_out=held_out)
    except (TrainDataError, FileNotFoundError) as exc:
        raise EvaluateStageError(str(exc)) from exc


def load_evaluation(path_or_dir: str | Path) -> EvaluationReport:
    """Read an ``evaluation.json`` (or the folder holding one); errors name the file."""
    try:
        return EvaluationReport.read_from(path_or_dir)
    except ArtifactError as exc:
        raise EvaluateStageError(str(exc)) from exc
