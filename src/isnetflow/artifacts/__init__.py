"""The typed JSON artifacts: one pydantic model, one reader and one writer for each file the stages hand on.

* :mod:`~isnetflow.artifacts.training` -- ``train_summary.json`` (:class:`~.training.TrainSummary`);
* :mod:`~isnetflow.artifacts.evaluation` -- ``evaluation.json`` (:class:`~.evaluation.EvaluationReport`);
* :mod:`~isnetflow.artifacts.validation` -- ``validation.json`` and the data artifact's ``ingest.json``
  (:class:`~.validation.ValidationSummary`, :class:`~.validation.IngestSummary`).

The stage that writes a file builds its model; the stages, tasks, gates and the run summary that read it
read the model. This package imports only pydantic (and NumPy to write), so the light readers (the
promotion gates, the run summary) stay light. Their rules, the same for all (:class:`Artifact`):

* every field may be missing (a file of an older version lacks the fields added since) and unknown keys
  are kept (a newer version's): a file is read whatever its age and written back with every key it had;
* written with :meth:`Artifact.write`: ``json.dumps(indent=2)`` of the fields that were set, in the
  order the model declares them, the kept unknown keys after them, NaN and infinities as ``null``
  (:func:`json_safe`);
* read with :meth:`Artifact.read`, whose error names the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Artifact", "ArtifactError", "finite", "json_safe"]


class ArtifactError(ValueError):
    """An artifact file cannot be read or does not hold what it should (the message names the file)."""


def json_safe(obj: Any) -> Any:
    """Recursively convert NumPy scalars/arrays to Python and non-finite floats to ``None``."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number; ``None`` for a missing, NaN or infinite one."""
    return float(value) if value is not None and math.isfinite(value) else None


class Artifact(BaseModel):
    """Base of the typed JSON artifacts (see the module docstring)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    #: what the file is, in the reader's error messages ("the evaluation", ...)
    TITLE: ClassVar[str] = "the artifact"

    @classmethod
    def of(cls, value: Self | Mapping[str, Any]) -> Self:
        """``value`` as this model: itself, or a mapping (a file's content, a payload) validated."""
        return value if isinstance(value, cls) else cls.model_validate(value)

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """The artifact in the file ``path``; :class:`ArtifactError` names the file when it cannot be read
        or its content does not fit the model."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{p}: cannot read {cls.TITLE}: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{p}: cannot read {cls.TITLE}: a JSON object was expected")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ArtifactError(f"{p}: cannot read {cls.TITLE}: {exc}") from exc

    def as_json(self) -> dict[str, Any]:
        """The JSON document: the fields that were set, in declared order, unknown keys after them, NaN as
        ``None``."""
        out: dict[str, Any] = json_safe(self.model_dump(exclude_unset=True))
        return out

    def write(self, path: str | Path) -> Path:
        """Write :meth:`as_json` to ``path`` (indented by 2); returns the path."""
        p = Path(path)
        p.write_text(json.dumps(self.as_json(), indent=2))
        return p
