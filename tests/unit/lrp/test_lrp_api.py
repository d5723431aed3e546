"""Behaviour and validation of the public LRP API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isnetflow.lrp import lrp_forward, relevance, stabilize

#: exactness checks on one thread (it used to be set at import, for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


def _net(dtype: torch.dtype = DT) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    ).to(dtype)


def test_stabilize_follows_zennit_sign_convention():
    z = torch.tensor([0.0, 2.0, -2.0, -0.0], dtype=DT)
    torch.testing.assert_close(stabilize(z, 0.5), torch.tensor([0.5, 2.5, -2.5, 0.5], dtype=DT))


def test_shape_dtype_and_graph_flags():
    torch.manual_seed(0)
    model = _net(torch.float32).eval()
    images = torch.rand(2, 1, 8, 8)
    targets = torch.tensor([0, 2])
    rel = relevance(model, images, targets)
    assert rel.shape == images.shape and rel.dtype == torch.float32
    assert not rel.requires_grad
    rel_graph = relevance(model, images, targets, create_graph=True)
    assert rel_graph.requires_grad
    torch.testing.assert_close(rel, rel_graph.detach())
    with torch.no_grad():
        torch.testing.assert_close(relevance(model, images, targets), rel)


def test_samples_are_independent_in_eval_mode():
    torch.manual_seed(1)
    model = _net().eval()
    images = torch.rand(3, 1, 8, 8, dtype=DT)
    targets = torch.tensor([1, 0, 2])
    batch = relevance(model, images, targets)
    for i in range(3):
        single = relevance(model, images[i : i + 1], targets[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-12, atol=1e-15)


def test_targets_select_the_explained_logit():
    torch.manual_seed(2)
    model = _net().eval()
    images = torch.rand(2, 1, 8, 8, dtype=DT)
    r0 = relevance(model, images, torch.tensor([0, 0]), first_layer="epsilon")
    r1 = relevance(model, images, torch.tensor([1, 1]), first_layer="epsilon")
    mixed = relevance(model, images, torch.tensor([0, 1]), first_layer="epsilon")
    torch.testing.assert_close(mixed[0], r0[0])
    torch.testing.assert_close(mixed[1], r1[1])
    assert not torch.allclose(r0, r1)


def test_raw_seed_skips_the_output_stabiliser():
    """``at="raw"`` with seed ``e_t * z_t / stab(z_t)`` equals the default output seed ``e_t``."""
    torch.manual_seed(3)
    model = _net().eval()
    images = torch.rand(4, 1, 8, 8, dtype=DT)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 1]), 3).to(DT)
    trace = lrp_forward(model, images, epsilon=0.3)
    assert trace.raw_logits is not None
    ratio = (trace.logits / stabilize(trace.logits, 0.3)).detach()
    torch.testing.assert_close(
        trace.relevance(onehot * ratio, at="raw"), trace.relevance(onehot), rtol=1e-12, atol=1e-15
    )
    # Several relevance passes over the same forward pass are allowed; without create_graph no graph.
    first, second = trace.relevance(onehot), trace.relevance(onehot)
    torch.testing.assert_close(first, second)
    assert not first.requires_grad
    assert trace.relevance(onehot, create_graph=True).requires_grad


def test_raw_logits_unavailable_when_model_does_not_end_with_a_linear_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.ReLU())
    trace = lrp_forward(model, torch.rand(2, 1, 4, 4))
    assert trace.raw_logits is None
    with pytest.raises(ValueError, match="at='output'"):
        trace.relevance(torch.ones(2, 3), at="raw")


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (torch.tensor([0.0, 1.0]), "LongTensor"),
        (torch.tensor([[0], [1]]), "LongTensor"),
        (torch.tensor([0]), "LongTensor"),
        (torch.tensor([0, 3]), r"\[0, 3\)"),
        (torch.tensor([-1, 0]), r"\[0, 3\)"),
    ],
)
def test_invalid_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        relevance(_net().eval(), torch.rand(2, 1, 8, 8, dtype=DT), targets)


def test_invalid_options():
    model, images, targets = _net().eval(), torch.rand(2, 1, 8, 8, dtype=DT), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="epsilon"):
        relevance(model, images, targets, epsilon=0.0)
    with pytest.raises(ValueError, match="first_layer"):
        relevance(model, images, targets, first_layer="zplus")  # type: ignore[arg-type]
    trace = lrp_forward(model, images)
    with pytest.raises(ValueError, match="seed shape"):
        trace.relevance(torch.ones(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="seed position"):
        trace.relevance(torch.ones(2, 3, dtype=DT), at="input")  # type: ignore[arg-type]


def test_zbox_requires_the_input_layer_to_see_the_images():
    # A model that normalises its input first: the first Conv sees a BN output, not the images.
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).eval()
    images, targets = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="first Conv/Linear layer"):
        relevance(model, images, targets, first_layer="zbox")
    rel = relevance(model, images, targets, first_layer="epsilon")
    assert rel.shape == images.shape and torch.isfinite(rel).all()


def test_model_output_must_be_batch_by_classes():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="batch, classes"):
        relevance(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))


def test_zbox_rejects_same_padding():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten(), nn.Linear(32, 2))
    with pytest.raises(ValueError, match="same"):
        relevance(model, torch.rand(1, 1, 4, 4), torch.tensor([0]))
