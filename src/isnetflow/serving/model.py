"""The pyfunc model the registry holds and KServe serves: :class:`CXRClassifier`, the facts stored with it
(:class:`ModelFacts`) and its signature.

The pyfunc package
------------------
:func:`isnetflow.registry.classifier.log_pyfunc` logs :class:`CXRClassifier` with the pickled torch module
as the artifact ``torch_model`` and the facts as ``metadata["isnetflow"]``. It is what the registry holds,
so

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
:mod:`isnetflow.serving.explain` turns a DICOM file into exactly the input training saw.

The class's import path: MLflow cloudpickles the :class:`CXRClassifier` instance, which names its class
by module and name. Models registered before this module existed name
``isnetflow.registry.packaging.CXRClassifier``; that module stays, an alias of this class, so they load.

Security: the ``torch_model`` artifact is a pickle; load only models from a store you trust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from isnetflow.config import TrainConfig

__all__ = [
    "EXPLAINED_CLASS",
    "EXPLAIN_METHOD",
    "EXPLAIN_PARAM",
    "HEATMAP",
    "METADATA_KEY",
    "SPLITS_ARTIFACT",
    "TORCH_ARTIFACT",
    "CXRClassifier",
    "LoadedClassifier",
    "ModelFacts",
    "model_signature",
]

#: the key of the package's metadata that holds the :class:`ModelFacts`, and the package's artifacts
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
        from isnetflow.nets import predict_proba

        if self.module is None:
            raise RuntimeError("CXRClassifier used before load_context")
        x = _as_batch(model_input, self.image_size)
        if x.shape[0]:
            proba = predict_proba(self.module, x, batch_size=self.batch_size).astype(np.float64)
        else:
            proba = np.zeros((0, len(self.classes)))
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
