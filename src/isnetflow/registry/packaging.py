"""Loading classifiers from any URI, and packaging them as an MLflow pyfunc model for the registry.

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
:attr:`LoadedClassifier.splits_csv` holds the file's bytes, found beside a local ``model.pt``, as the
training run's artifact ``splits.csv`` (``pytorch`` models) or as the package's artifact ``splits``, and
``ModelFacts.splits_sha256`` the digest the training recorded (summary, run parameter
``data.splits_sha256``, package metadata). Nothing here checks the two against each other: the evaluation
does (:func:`isnetflow.evaluation.io.held_out_split`). A model without a recorded digest (trained before)
has ``splits_sha256 == ""``.

The pyfunc package
------------------
:func:`log_pyfunc` logs :class:`CXRClassifier` with the pickled torch module as the artifact
``torch_model`` and the facts as ``metadata["isnetflow"]``. It is what the registry holds, so

.. code-block:: python

    import mlflow, numpy as np
    model = mlflow.pyfunc.load_model("models:/cxr-isnet@champion")
    x = np.zeros((5, 1, 128, 128), dtype=np.float32)   # any batch size; normalized images in [0, 1]
    proba = model.predict(x)                            # DataFrame: one column per class, rows sum to 1
    torch_module = model.unwrap_python_model().module   # the nn.Module itself, e.g. for LRP

Signature: input ``TensorSpec(float32, (-1, 1, S, S))`` where ``S`` is the training image size (images
letterboxed and normalized exactly as the validate stage does: bright = dense, 0..1); output one
``double`` column per class name, in training order (the first is the negative class).

Explanations on demand: the signature declares the inference parameter ``explain`` (boolean, default
false). ``model.predict(x, params={"explain": True})`` (REST: ``{"inputs": ..., "params": {"explain":
true}}``) adds two columns: ``explained_class`` (the predicted class) and ``heatmap`` (an ``S x S``
float32 relevance map per image, at the model's input resolution). The one LRP choice is the one the
ISNet is trained with, :func:`isnetflow.lrp.relevance`: LRP-epsilon at every layer (epsilon = the
training run's ``heatmap.epsilon``, default 0.01) and the z^B rule over [0, 1] at the input layer,
explaining the predicted class's logit; positive relevance is evidence for that class.

Normalization: ``ModelFacts.normalization`` holds the validate settings of the training data (read
from the training run's ``manifest`` dataset input, see :mod:`isnetflow.registry.lineage`), so
:mod:`isnetflow.registry.serving` turns a DICOM file into exactly the input training saw.

Security: ``model.pt`` files are pickles; load only models from a store you trust.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from isnetflow import __version__
from isnetflow.config import TrainConfig
from isnetflow.registry.tracking import is_mlflow_uri
from isnetflow.training.splitfile import SPLITS_FILE, digest

log = logging.getLogger(__name__)

__all__ = [
    "EXPLAIN_METHOD",
    "EXPLAIN_PARAM",
    "HEATMAP",
    "CXRClassifier",
    "LoadedClassifier",
    "ModelFacts",
    "ModelLoadError",
    "load_classifier",
    "log_pyfunc",
    "model_signature",
]

METADATA_KEY = "isnetflow"
TORCH_ARTIFACT = "torch_model"
#: the package's copy of the training run's held-out patient list (``splits.csv``)
SPLITS_ARTIFACT = "splits"
#: the inference parameter that asks for heatmaps, and the columns it adds to the output
EXPLAIN_PARAM = "explain"
EXPLAINED_CLASS = "explained_class"
HEATMAP = "heatmap"
#: the one LRP choice of explanations on demand (see the module docstring)
EXPLAIN_METHOD = "isnetflow.lrp.relevance: LRP-epsilon, z^B input layer over [0, 1], predicted class"


class ModelLoadError(ValueError):
    """A model URI cannot be loaded or lacks the facts needed to use it (message names the URI)."""


@dataclass(frozen=True)
class ModelFacts:
    """What evaluation and serving need to know about a trained classifier."""

    image_size: int
    classes: list[str]
    val_fraction: float
    test_fraction: float
    seed: int
    mode: str = ""
    architecture: str = ""
    run_id: str = ""
    source_uri: str = ""
    split_source: str = (
        "run"  # where val/test fractions and seed came from: run | metadata | summary | config
    )
    #: the validate stage's settings (``ValidateConfig`` as JSON) of the training data; None when unknown
    normalization: dict[str, Any] | None = None
    #: epsilon of the explanations' LRP rule (the training heatmap's ``heatmap.epsilon``)
    lrp_epsilon: float = 0.01
    #: SHA-256 of the training run's ``splits.csv``; "" when none was recorded (trained before it existed)
    splits_sha256: str = ""

    def as_metadata(self) -> dict[str, Any]:
        """These facts as the registered model's metadata dict."""
        return asdict(self)

    def train_config(self) -> TrainConfig:
        """A TrainConfig carrying the facts that :func:`isnetflow.training.load_train_data` uses."""
        return TrainConfig(
            image_size=self.image_size,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            **({"model": self.architecture} if self.architecture else {}),
        )


@dataclass
class LoadedClassifier:
    """An ``nn.Module`` in eval mode on the CPU plus its :class:`ModelFacts`, and the training run's
    ``splits.csv`` as found with the model (``None``: not found) with where it was looked for."""

    module: nn.Module
    facts: ModelFacts
    splits_csv: bytes | None = None
    splits_location: str = ""


def model_signature(image_size: int, classes: list[str]) -> Any:
    """The pyfunc signature: ``(-1, 1, S, S)`` float32 images in, one probability column per class out,
    and the inference parameter ``explain`` (with it: ``explained_class`` and an ``S x S`` ``heatmap``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, image_size, image_size), name="images")]),
        outputs=Schema(
            [
                *(ColSpec("double", c) for c in classes),
                ColSpec("string", EXPLAINED_CLASS, required=False),
                ColSpec(Array(Array("float")), HEATMAP, required=False),
            ]
        ),
        params=ParamSchema([ParamSpec(EXPLAIN_PARAM, "boolean", False)]),
    )


def _flag(value: Any) -> bool:
    """A boolean inference parameter as MLflow may pass it (bool, or a string from some clients)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


class CXRClassifier(PythonModel):
    """pyfunc wrapper: normalized images ``(N, 1, S, S)`` -> class probabilities (DataFrame).

    Input validation is the signature's job (:func:`model_signature`); the ``np.ndarray`` type hint
    tells MLflow not to infer a schema from ``predict``.
    """

    def __init__(
        self, classes: list[str], image_size: int, batch_size: int = 32, lrp_epsilon: float = 0.01
    ) -> None:
        """A wrapper for ``classes`` at ``image_size``; the network is loaded by :meth:`load_context`."""
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.lrp_epsilon = float(lrp_epsilon)
        self.module: nn.Module | None = None
        #: the package's ``splits.csv`` bytes (None: packaged without one)
        self.splits_csv: bytes | None = None

    def load_context(self, context: Any) -> None:
        """Load the pickled network and the packaged ``splits.csv`` (when there is one) from the artifacts."""
        self.module = torch.load(context.artifacts[TORCH_ARTIFACT], map_location="cpu", weights_only=False)
        assert self.module is not None
        self.module.eval()
        splits = context.artifacts.get(SPLITS_ARTIFACT)
        self.splits_csv = Path(splits).read_bytes() if splits else None

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Class probabilities of ``model_input`` (normalized images), one column per class."""
        if self.module is None:
            raise RuntimeError("CXRClassifier used before load_context")
        x = _as_batch(model_input, self.image_size)
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                logits = self.module(torch.from_numpy(x[i : i + self.batch_size]))
                out.append(torch.softmax(logits.float(), dim=1).double().numpy())
        proba = np.concatenate(out) if out else np.zeros((0, len(self.classes)))
        frame = pd.DataFrame(proba, columns=self.classes)
        if _flag((params or {}).get(EXPLAIN_PARAM, False)):
            targets = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
            maps = self.heatmaps(x, targets)
            # object dtype, not pandas 3's "str": MLServer's V2 codec (KServe's MLflow runtime) encodes
            # object columns as BYTES and has no datatype for "str" (tests/integration/test_kserve_runtime.py)
            frame[EXPLAINED_CLASS] = pd.Series([self.classes[int(t)] for t in targets], dtype=object)
            frame[HEATMAP] = list(maps)
        return frame

    def heatmaps(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``(N, S, S)`` float32 LRP relevance of the ``targets`` logits (see :data:`EXPLAIN_METHOD`)."""
        from isnetflow.lrp import relevance

        if self.module is None:
            raise RuntimeError("CXRClassifier used before load_context")
        maps = []
        for i in range(0, x.shape[0], self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size]))
            t = torch.as_tensor(targets[i : i + self.batch_size], dtype=torch.long)
            rel = relevance(self.module, batch, t, epsilon=self.lrp_epsilon, first_layer="zbox")
            maps.append(rel.detach().float().numpy()[:, 0])
        if not maps:
            return np.zeros((0, self.image_size, self.image_size), dtype=np.float32)
        return np.concatenate(maps).astype(np.float32, copy=False)


def _as_batch(model_input: Any, size: int) -> np.ndarray:
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise ValueError(f"expected one input tensor, got keys {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    x = np.asarray(model_input, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, size, size):
        raise ValueError(f"expected images of shape (N, 1, {size}, {size}), got {x.shape}")
    return np.ascontiguousarray(x)


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
    summary_file = model_file.parent / "train_summary.json"
    summary: dict[str, Any] = {}
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    cfg = fallback
    if "image_size" not in summary and cfg is None:
        raise ModelLoadError(
            f"{model_file}: no train_summary.json beside it and no training config to fall back on"
        )
    if "classes" not in summary:
        raise ModelLoadError(f"{summary_file}: the class order ('classes') is needed and missing")
    keys = ("val_fraction", "test_fraction", "seed")
    if all(k in summary for k in keys):
        split = {k: summary[k] for k in keys}
        source = "summary"
    else:
        if cfg is None:
            raise ModelLoadError(
                f"{summary_file}: no split parameters and no training config to fall back on"
            )
        split = {"val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction, "seed": cfg.seed}
        source = "config"
        log.warning(
            "%s: split seed/fractions not recorded; using the training config's (%s)", summary_file, split
        )
    run_id = str(summary.get("run_id", ""))
    facts = ModelFacts(
        image_size=int(summary.get("image_size", cfg.image_size if cfg else 0)),
        classes=list(summary["classes"]),
        val_fraction=float(split["val_fraction"]),
        test_fraction=float(split["test_fraction"]),
        seed=int(split["seed"]),
        mode=str(summary.get("mode", "")),
        architecture=str(summary.get("model", "")),
        run_id=run_id,
        source_uri=str(model_file.resolve()),
        split_source=source,
        normalization=_normalization_if_tracked(run_id),
        splits_sha256=str(summary.get("splits_sha256", "")),
    )
    splits_file = model_file.parent / str(summary.get("splits_file", SPLITS_FILE))
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
