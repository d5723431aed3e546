"""The pyfunc model class: probabilities for any batch size; and the old import paths that registered
models (``isnetflow.registry.packaging``) and deployed ServingRuntimes
(``isnetflow.registry.mlserver_runtime``) name, which must keep naming today's classes."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from isnetflow.nets import build_model
from isnetflow.registry.classifier import load_classifier, log_pyfunc
from isnetflow.registry.tracking import use_tracking
from isnetflow.serving.model import CXRClassifier, ModelFacts

FACTS = ModelFacts(
    image_size=32, classes=["normal", "covid"], val_fraction=0.2, test_fraction=0.1, seed=4, mode="isnet"
)
#: ``python_model.pkl`` as isnetflow wrote it before the class moved (commit 408c074, where it was
#: ``isnetflow.registry.packaging.CXRClassifier``): ``cloudpickle.dumps(CXRClassifier(["normal", "covid"],
#: 32, 2, 0.01))`` with cloudpickle 3.1.3, which is what ``mlflow.pyfunc.log_model`` stores for the instance
OLD_PICKLE = (
    b"\x80\x05\x95\xa6\x00\x00\x00\x00\x00\x00\x00\x8c\x1cisnetflow.registry.packaging\x94\x8c\r"
    b"CXRClassifier\x94\x93\x94)\x81\x94}\x94(\x8c\x07classes\x94]\x94(\x8c\x06normal\x94\x8c\x05covid"
    b"\x94e\x8c\nimage_size\x94K \x8c\nbatch_size\x94K\x02\x8c\x0blrp_epsilon\x94G?\x84z\xe1G\xae\x14{"
    b"\x8c\x06module\x94N\x8c\nsplits_csv\x94Nub."
)


@pytest.fixture(scope="module")
def module() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn-small", 2).eval()


def test_wrapper_predicts_probabilities_for_any_batch_size(module: nn.Module, tmp_path: Path) -> None:
    torch.save(module, tmp_path / "m.pt")
    wrapper = CXRClassifier(FACTS.classes, 32, batch_size=2)
    wrapper.load_context(SimpleNamespace(artifacts={"torch_model": str(tmp_path / "m.pt")}))
    for n in (0, 1, 5):
        x = np.random.default_rng(n).random((n, 1, 32, 32), dtype=np.float32)
        out = wrapper.predict(None, x)
        assert list(out.columns) == ["normal", "covid"] and len(out) == n
        if n:
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
            ref = torch.softmax(module(torch.from_numpy(x)), 1).detach().numpy()
            np.testing.assert_allclose(out.to_numpy(), ref, rtol=1e-5, atol=1e-6)
    assert len(wrapper.predict(None, np.zeros((3, 32, 32), np.float32))) == 3  # channel axis added
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        wrapper.predict(None, np.zeros((2, 1, 16, 16), np.float32))


def test_a_package_pickled_under_the_old_class_path_still_loads(module: nn.Module, tmp_path: Path) -> None:
    """A package logged before the move: its ``python_model.pkl`` names
    ``isnetflow.registry.packaging.CXRClassifier``; MLflow loads it as today's class, which predicts."""
    assert b"\x1cisnetflow.registry.packaging\x94\x8c\rCXRClassifier" in OLD_PICKLE
    use_tracking(f"sqlite:///{tmp_path}/mlflow.db", "old-class-path")
    with mlflow.start_run():
        info = log_pyfunc(module, FACTS, batch_size=2)
    package = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "package")))
    pickled = package / "python_model.pkl"
    assert b"isnetflow.serving.model" in pickled.read_bytes()  # what a package logged today names
    pickled.write_bytes(OLD_PICKLE)

    model = mlflow.pyfunc.load_model(str(package))
    wrapper = model.unwrap_python_model()
    assert type(wrapper) is CXRClassifier and wrapper.classes == FACTS.classes and wrapper.module is not None
    x = np.random.default_rng(1).random((3, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = torch.softmax(module(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(model.predict(x).to_numpy(), ref, rtol=1e-5, atol=1e-6)
    # the registry's own loader (the evaluation's and ``isnetflow explain``'s) reads it too
    mlflow.register_model(f"file://{package}", "old-class-path")
    loaded = load_classifier("models:/old-class-path/1")
    assert loaded.facts.classes == FACTS.classes and loaded.facts.split_source == "metadata"


@pytest.mark.parametrize(
    "path",
    [
        "isnetflow.serving.mlserver_runtime.CXRMLflowRuntime",  # k8s/serving/servingruntime.yaml
        "isnetflow.registry.mlserver_runtime.CXRMLflowRuntime",  # a ServingRuntime applied before the move
    ],
)
def test_both_runtime_paths_name_the_runtime_class(path: str) -> None:
    """What MLServer imports from ``MLSERVER_MODEL_IMPLEMENTATION``, under the new and the old name."""
    from isnetflow.serving.mlserver_runtime import CXRMLflowRuntime

    module_name, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module_name), name) is CXRMLflowRuntime
