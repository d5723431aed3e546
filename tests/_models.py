"""A small packaged classifier in the registry, as the serving tests need one."""

from __future__ import annotations

import mlflow
import torch

from isnetflow.config import ValidateConfig
from isnetflow.nets import build_model
from isnetflow.registry.classifier import log_pyfunc
from isnetflow.serving.model import ModelFacts

CLASSES = ["normal", "covid"]


def register_small_classifier(name: str, *, size: int, seed: int = 0, alias: str | None = "champion") -> str:
    """Log a ``cnn-small`` pyfunc package (input ``size`` px) in a new run, register it as a version of
    ``name`` and point ``alias`` at it; returns the version."""
    torch.manual_seed(seed)
    facts = ModelFacts(
        image_size=size,
        classes=CLASSES,
        val_fraction=0.2,
        test_fraction=0.1,
        seed=0,
        mode="isnet",
        architecture="cnn-small",
        normalization=ValidateConfig(image_size=64).model_dump(mode="json"),
    )
    with mlflow.start_run():
        info = log_pyfunc(build_model("cnn-small", 2).eval(), facts)
    version = str(mlflow.register_model(info.model_uri, name).version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return version
