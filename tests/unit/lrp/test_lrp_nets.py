"""The model factory and LRP on the registered classifiers (float32, small inputs)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet121
from torch import nn

from isnetflow.bench.lrp import step_times
from isnetflow.lrp import relevance
from isnetflow.nets import NETS, build_model

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_contents():
    assert set(NETS) == {"densenet121", "densenet-small", "densenet-medium", "cnn-small"}
    assert isinstance(build_model("densenet121", 2), DenseNet121)
    small = build_model("densenet-small", 2)
    assert sum(p.numel() for p in small.parameters()) < 200_000


def test_invalid_requests():
    with pytest.raises(KeyError, match="resnet"):
        build_model("resnet", 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn-small", 1)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("cnn-small", 2, in_channels=0)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("train", [True, False])
def test_relevance_on_registered_models(name, train):
    torch.manual_seed(0)
    model = build_model(name, num_classes=2, in_channels=1).train(train)
    images = torch.rand(2, 1, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 2)
    targets = torch.tensor([0, 1])
    rel = relevance(model, images, targets, create_graph=True)
    assert rel.shape == images.shape
    assert torch.isfinite(rel).all() and float(rel.detach().abs().sum()) > 0
    rel.abs().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    assert all(inplace)  # the MONAI/cnn-small in-place ReLUs are restored


def test_step_times_reports_both_steps():
    result = step_times("cnn-small", batch=2, image_size=16, device="cpu", steps=1)
    keys = {"standard_step_s", "isnet_step_s", "ratio", "device", "model", "batch", "image_size"}
    assert keys <= set(result)
    assert result["standard_step_s"] > 0 and result["isnet_step_s"] > 0
    assert result["ratio"] == pytest.approx(result["isnet_step_s"] / result["standard_step_s"])
    described = (result["model"], result["batch"], result["image_size"], result["device"])
    assert described == ("cnn-small", 2, 16, "cpu")
    with pytest.raises(ValueError, match="steps"):
        step_times("cnn-small", batch=2, image_size=16, steps=0)
