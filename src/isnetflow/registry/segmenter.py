"""Loading a lung segmenter from the shipped weights, a local spec/weights/folder, or MLflow (the
segmenter's counterpart of :func:`isnetflow.registry.classifier.load_classifier`).

The segmenter itself is :mod:`isnetflow.masks`; training and registering it is the stage
:mod:`isnetflow.stages.segmenter`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from isnetflow.masks.inference import LungSegmenter
from isnetflow.masks.network import resolve_spec_path
from isnetflow.registry.tracking import is_mlflow_uri, resolve_tracking_uri, scoped_tracking

__all__ = ["load_segmenter"]


def load_segmenter(
    model: str | Path | None = None, *, tracking_uri: str | None = None, batch_size: int = 16
) -> LungSegmenter:
    """Load the shipped weights (None), a local spec/weights/folder, or an MLflow URI such as
    ``models:/lung-segmenter/3`` (downloaded to a temporary folder first).

    An MLflow URI needs a store: ``tracking_uri`` (the command or task resolved it), else
    ``$MLFLOW_TRACKING_URI``; there is no local default (a ValueError names both)."""
    if model is None or not is_mlflow_uri(str(model)):
        return LungSegmenter.load(model, batch_size=batch_size)
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = str(model)
    store = resolve_tracking_uri(tracking_uri, None)
    if store is None:
        raise ValueError(f"{uri}: an MLflow URI needs a tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)")
    with tempfile.TemporaryDirectory(prefix="isnetflow-seg-") as tmp, scoped_tracking(store):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise ValueError(f"{uri}: cannot download the model from MLflow ({store}): {exc}") from exc
        return LungSegmenter.load(resolve_spec_path(local), batch_size=batch_size)
