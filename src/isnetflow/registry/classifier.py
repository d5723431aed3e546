"""Loading classifiers from any URI, and logging them as the MLflow pyfunc model the registry holds.

Model URIs
----------
:func:`load_classifier` accepts

* a local ``model.pt`` (the train stage's pickled ``nn.Module``) or the folder containing it; the
  facts needed to evaluate it (image size, class order, the split seed and fractions) come from the
  ``train_summary.json`` beside it, and the split parameters fall back to the given
  :class:`~isnetflow.config.TrainConfig` when the summary lacks them;
* ``runs:/<run_id>/<path>`` and ``models:/<name>/<version>`` / ``models:/<name>@<alias>`` MLflow URIs
  (any of :data:`isnetflow.registry.tracking.MLFLOW_URI_SCHEMES`) of either the train stage's
  ``pytorch`` model (facts from the run's parameters) or a package made here (facts from the model's
  ``isnetflow`` metadata).

The held-out patient list
-------------------------
A model trained since ``splits.csv`` exists (:mod:`isnetflow.training.splitfile`) comes with it:
:attr:`~isnetflow.serving.model.LoadedClassifier.splits_csv` holds the file's bytes, found beside a local
``model.pt``, as the training run's artifact ``splits.csv`` (``pytorch`` models) or as the package's
artifact ``splits``, and ``ModelFacts.splits_sha256`` the digest the training recorded (summary, run
parameter ``data.splits_sha256``, package metadata). Nothing here checks the two against each other: the
evaluation does (:func:`isnetflow.evaluation.io.held_out_split`). A model without a recorded digest
(trained before) has ``splits_sha256 == ""``.

The pyfunc package
------------------
:func:`log_pyfunc` logs :class:`~isnetflow.serving.model.CXRClassifier` with the pickled torch module as
the artifact ``torch_model`` and the facts as ``metadata["isnetflow"]``; the package's format, signature
and explanations on demand are :mod:`isnetflow.serving.model`'s.

Security: ``model.pt`` files are pickles; load only models from a store you trust.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import torch
from torch import nn

from isnetflow import __version__
from isnetflow.artifacts import ArtifactError
from isnetflow.artifacts.training import TRAIN_SUMMARY_FILE, TrainSummary
from isnetflow.config import TrainConfig
from isnetflow.registry.tracking import is_mlflow_uri
from isnetflow.serving.model import (
    EXPLAIN_PARAM,
    METADATA_KEY,
    SPLITS_ARTIFACT,
    TORCH_ARTIFACT,
    CXRClassifier,
    LoadedClassifier,
    ModelFacts,
    model_signature,
)
from isnetflow.training.splitfile import SPLITS_FILE, digest

log = logging.getLogger(__name__)

__all__ = ["ModelLoadError", "load_classifier", "log_pyfunc"]


class ModelLoadError(ValueError):
    """A model URI cannot be loaded or lacks the facts needed to use it (message names the URI)."""


def log_pyfunc(
    module: nn.Module,
    facts: ModelFacts,
    *,
    name: str = "pyfunc_model",
    batch_size: int = 32,
    splits_csv: bytes | None = None,
) -> Any:
    """Log :class:`CXRClassifier` (torch module as an artifact) to the *active* run; returns the ModelInfo.

    ``splits_csv``: the training run's held-out patient list, packaged as the artifact ``splits``; its
    digest must be ``facts.splits_sha256``."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_pyfunc needs an active MLflow run")
    if splits_csv is not None and digest(splits_csv) != facts.splits_sha256:
        raise ValueError(
            f"{SPLITS_FILE}: SHA-256 {digest(splits_csv)[:12]}... is not the model's recorded "
            f"{facts.splits_sha256[:12] or '(none)'}...: refusing to package it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(module.to("cpu").eval(), path)
        artifacts = {TORCH_ARTIFACT: str(path)}
        if splits_csv is not None:
            (Path(tmp) / SPLITS_FILE).write_bytes(splits_csv)
            artifacts[SPLITS_ARTIFACT] = str(Path(tmp) / SPLITS_FILE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=CXRClassifier(facts.classes, facts.image_size, batch_size, facts.lrp_epsilon),
            artifacts=artifacts,
            signature=model_signature(facts.image_size, facts.classes),
            input_example=(
                np.zeros((1, 1, facts.image_size, facts.image_size), dtype=np.float32),
                {EXPLAIN_PARAM: False},
            ),
            metadata={METADATA_KEY: facts.as_metadata()},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"isnetflow=={__version__}"],
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _facts_from_params(params: dict[str, str], uri: str, run_id: str) -> ModelFacts:
    from isnetflow.registry.lineage import normalization_of_run

    try:
        classes = [c for c in params["data.classes"].split(",") if c]
        return ModelFacts(
            image_size=int(params["image_size"]),
            classes=classes,
            val_fraction=float(params["val_fraction"]),
            test_fraction=float(params["test_fraction"]),
            seed=int(params["seed"]),
            mode=params.get("mode", ""),
            architecture=params.get("model", ""),
            run_id=run_id,
            source_uri=uri,
            split_source="run",
            normalization=normalization_of_run(run_id),
            lrp_epsilon=float(params.get("heatmap.epsilon", 0.01)),
            splits_sha256=params.get("data.splits_sha256", ""),
        )
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(
            f"{uri}: run {run_id} lacks the training parameters needed for evaluation "
            f"(image_size, val_fraction, test_fraction, seed, data.classes): {exc}"
        ) from exc


def _load_local(path: Path, fallback: TrainConfig | None) -> LoadedClassifier:
    model_file = path / "model.pt" if path.is_dir() else path
    if not model_file.is_file():
        raise ModelLoadError(f"{model_file}: model file not found")
    try:
        module = torch.load(model_file, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"{model_file}: cannot load the pickled model: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{model_file}: expected a pickled torch.nn.Module, got {type(module).__name__}")
    summary_file = model_file.parent / TRAIN_SUMMARY_FILE
    try:
        summary = TrainSummary.read(summary_file) if summary_file.is_file() else TrainSummary()
    except ArtifactError as exc:
        raise ModelLoadError(str(exc)) from exc
    cfg = fallback
    if summary.image_size is None and cfg is None:
        raise ModelLoadError(
            f"{model_file}: no train_summary.json beside it and no training config to fall back on"
        )
    if summary.classes is None:
        raise ModelLoadError(f"{summary_file}: the class order ('classes') is needed and missing")
    if summary.val_fraction is not None and summary.test_fraction is not None and summary.seed is not None:
        val_fraction, test_fraction, seed = summary.val_fraction, summary.test_fraction, summary.seed
        source = "summary"
    else:
        if cfg is None:
            raise ModelLoadError(
                f"{summary_file}: no split parameters and no training config to fall back on"
            )
        val_fraction, test_fraction, seed = cfg.val_fraction, cfg.test_fraction, cfg.seed
        source = "config"
        log.warning(
            "%s: split seed/fractions not recorded; using the training config's (%s)",
            summary_file,
            {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        )
    run_id = summary.run_id or ""
    image_size = summary.image_size if summary.image_size is not None else cfg.image_size if cfg else 0
    facts = ModelFacts(
        image_size=int(image_size),
        classes=list(summary.classes),
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
        seed=int(seed),
        mode=summary.mode or "",
        architecture=summary.model or "",
        run_id=run_id,
        source_uri=str(model_file.resolve()),
        split_source=source,
        normalization=_normalization_if_tracked(run_id),
        splits_sha256=summary.splits_sha256 or "",
    )
    splits_file = model_file.parent / (summary.splits_file or SPLITS_FILE)
    found = splits_file.read_bytes() if facts.splits_sha256 and splits_file.is_file() else None
    return LoadedClassifier(module.eval(), facts, found, str(splits_file))


def _normalization_if_tracked(run_id: str) -> dict[str, Any] | None:
    """A local model's training normalization, from its MLflow run when the store has it (else None)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not run_id or not is_tracking_uri_set():  # never create a default store as a side effect
        return None

    from isnetflow.registry.lineage import normalization_of_run

    try:
        return normalization_of_run(run_id)
    except (MlflowException, OSError) as exc:
        log.debug("run %s: no normalization settings found (%s)", run_id, exc)
        return None


def _load_mlflow(uri: str) -> LoadedClassifier:
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"{uri}: cannot read the model: {exc}") from exc
    flavors = info.flavors or {}
    meta = (info.metadata or {}).get(METADATA_KEY)
    splits_csv: bytes | None = None
    where = ""
    try:
        if meta is not None:
            facts = ModelFacts(**{**meta, "source_uri": uri, "split_source": "metadata"})
            wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
            module = wrapper.module
            splits_csv = getattr(wrapper, "splits_csv", None)
            where = f"{uri} (artifact {SPLITS_ARTIFACT!r})"
        elif "pytorch" in flavors:
            if not info.run_id:
                raise ModelLoadError(f"{uri}: the model has no source run to read training parameters from")
            params = mlflow.MlflowClient().get_run(info.run_id).data.params
            facts = _facts_from_params(params, uri, info.run_id)
            module = mlflow.pytorch.load_model(uri, map_location="cpu")
            where = f"runs:/{info.run_id}/{SPLITS_FILE}"
            if facts.splits_sha256:
                splits_csv = _run_splits(info.run_id)
        else:
            raise ModelLoadError(
                f"{uri}: neither an isnetflow pyfunc package nor a pytorch model ({sorted(flavors)})"
            )
    except MlflowException as exc:
        raise ModelLoadError(f"{uri}: cannot load the model: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{uri}: loaded object is {type(module).__name__}, not a torch.nn.Module")
    return LoadedClassifier(module.to("cpu").eval(), facts, splits_csv, where)


def _run_splits(run_id: str) -> bytes | None:
    """The bytes of the training run's artifact ``splits.csv`` (None when the run has none)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SPLITS_FILE, dst_path=tmp)
            return Path(got).read_bytes()
        except (MlflowException, OSError) as exc:
            log.warning("run %s: no %s artifact (%s)", run_id, SPLITS_FILE, exc)
            return None


def load_classifier(uri: str, *, fallback: TrainConfig | None = None) -> LoadedClassifier:
    """Load a classifier and its facts from a local path or an MLflow URI (tracking URI already set)."""
    if is_mlflow_uri(uri):
        return _load_mlflow(uri)
    return _load_local(Path(uri), fallback)
