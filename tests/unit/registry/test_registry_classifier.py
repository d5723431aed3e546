"""Logging the pyfunc package, and the model loader (local files and MLflow URIs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from isnetflow.config import TrainConfig
from isnetflow.nets import build_model
from isnetflow.registry.classifier import ModelLoadError, load_classifier, log_pyfunc
from isnetflow.serving.model import ModelFacts, model_signature

FACTS = ModelFacts(
    image_size=32, classes=["normal", "covid"], val_fraction=0.2, test_fraction=0.1, seed=4, mode="isnet"
)


@pytest.fixture(scope="module")
def module() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn-small", 2).eval()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[str]:
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)


def test_logged_package_loads_as_pyfunc_and_as_module(module: nn.Module, local_store: str) -> None:
    mlflow.set_experiment("pkg")
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_pyfunc(module, FACTS)
    with mlflow.start_run():
        info = log_pyfunc(module, FACTS)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    assert pyfunc.metadata.signature == model_signature(32, FACTS.classes)
    x = np.random.default_rng(0).random((7, 1, 32, 32), dtype=np.float32)
    proba = pyfunc.predict(x)
    assert proba.shape == (7, 2)
    loaded = load_classifier(info.model_uri)
    assert loaded.facts.seed == 4 and loaded.facts.split_source == "metadata" and loaded.facts.mode == "isnet"
    with torch.no_grad():
        ref = torch.softmax(loaded.module(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(proba.to_numpy(), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelLoadError, match=r"runs:/0+/nothing"):
        load_classifier("runs:/" + "0" * 32 + "/nothing")


def test_local_loader_uses_the_summary_and_names_problems(module: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_classifier(str(tmp_path / "missing.pt"))
    torch.save({"not": "a module"}, tmp_path / "dict.pt")
    with pytest.raises(ModelLoadError, match=r"expected a pickled torch\.nn\.Module"):
        load_classifier(str(tmp_path / "dict.pt"))
    folder = tmp_path / "train"
    folder.mkdir()
    torch.save(module, folder / "model.pt")
    with pytest.raises(ModelLoadError, match=r"no train_summary\.json"):
        load_classifier(str(folder))
    summary = {"image_size": 32, "classes": ["normal", "covid"], "run_id": "abc", "mode": "standard"}
    (folder / "train_summary.json").write_text(json.dumps(summary))
    with pytest.raises(ModelLoadError, match="no split parameters"):
        load_classifier(str(folder))
    fallback = TrainConfig(val_fraction=0.25, test_fraction=0.15, seed=9)
    loaded = load_classifier(str(folder), fallback=fallback)
    assert (loaded.facts.val_fraction, loaded.facts.test_fraction, loaded.facts.seed) == (0.25, 0.15, 9)
    assert loaded.facts.split_source == "config" and loaded.facts.run_id == "abc"
    (folder / "train_summary.json").write_text(
        json.dumps({**summary, "val_fraction": 0.3, "test_fraction": 0.2, "seed": 1})
    )
    loaded = load_classifier(str(folder / "model.pt"), fallback=fallback)
    assert loaded.facts.split_source == "summary" and loaded.facts.seed == 1
    assert loaded.facts.train_config().image_size == 32
