"""zennit explanations on the networks of isnetflow.nets: the graph-checked batch-norm canonizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

from isnetflow.audit.explain import GraphMergeBatchNorm, explain, mergeable_batch_norms
from isnetflow.lrp import relevance
from isnetflow.nets import build_model


def _trained_bn(name: str, size: int = 48) -> nn.Module:
    """A network whose batch norms have non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 1, size, size))
    return model.eval()


def test_only_graph_verified_pairs_are_merged() -> None:
    cnn = mergeable_batch_norms(build_model("cnn-small", 2).eval())
    assert cnn == [("0", "1"), ("4", "5"), ("8", "9")]
    dn = mergeable_batch_norms(build_model("densenet-small", 2).eval())
    # conv0 -> norm0 and each of the 8 dense layers' conv1 -> norm2; never a BN after a concatenation
    assert len(dn) == 9 and ("features.conv0", "features.norm0") in dn
    assert all(bn.endswith(("norm0", "norm2")) for _, bn in dn)
    assert not any(bn.endswith(("norm1", "transition1.norm", "norm5")) for _, bn in dn)
    big = mergeable_batch_norms(build_model("densenet121", 2).eval())
    assert len(big) == 1 + (6 + 12 + 24 + 16)


def test_zennit_sequential_merge_fails_on_densenet_but_graph_merge_is_exact() -> None:
    model = _trained_bn("densenet-small")
    # zennit pairs each dense layer's last conv with the *next* layer's norm1, which normalizes the
    # concatenation of all earlier features: the channel counts differ and the merge fails
    with pytest.raises(RuntimeError):
        SequentialMergeBatchNorm().apply(model)
    model = _trained_bn("densenet-small")  # fresh copy: the failed merge may have modified parameters
    x = torch.rand(4, 1, 48, 48)
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    instances = GraphMergeBatchNorm().apply(model)
    assert len(instances) == 9
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-4, atol=1e-5)  # same function
    for inst in instances:
        inst.remove()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    with pytest.raises(ValueError, match="eval mode"):
        GraphMergeBatchNorm().apply(model.train())


@pytest.mark.parametrize("name", ["cnn-small", "densenet-small"])
def test_explain_is_finite_and_leaves_the_model_alone(name: str) -> None:
    model = _trained_bn(name)
    x = torch.rand(3, 1, 48, 48)
    t = torch.tensor([0, 1, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    assert any(inplace)  # both nets use in-place ReLUs; explain() must work on a copy without them
    for composite in ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon"):
        rel = explain(model, x, t, composite=composite, batch_size=2)  # type: ignore[arg-type]
        assert rel.shape == (3, 1, 48, 48) and np.isfinite(rel).all() and np.abs(rel).sum() > 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace
    assert not model.training


@pytest.mark.parametrize("name", ["cnn-small", "densenet-small"])
def test_epsilon_composite_without_canonizer_matches_isnetflow_lrp(name: str) -> None:
    """zennit and the training-time LRP implement the same epsilon / z^B rules (independent code)."""
    model = _trained_bn(name)
    x = torch.rand(3, 1, 48, 48)
    t = torch.tensor([1, 0, 1])
    ours = relevance(model, x, t, epsilon=0.01).detach().numpy()
    theirs = explain(model, x, t, composite="epsilon", epsilon=0.01, canonize=False)
    scale = np.abs(ours).max()
    assert np.abs(ours - theirs).max() < 0.02 * scale
    # the canonized variant differs (merged layers stabilize once), but only slightly
    canon = explain(model, x, t, composite="epsilon", epsilon=0.01)
    corr = np.corrcoef(ours.ravel(), canon.ravel())[0, 1]
    assert corr > 0.9
