"""Post-hoc LRP explanations of a finished classifier with zennit (independent of the training LRP).

Composites
----------
``"epsilon_gamma_box"`` (default)
    zennit's :class:`~zennit.composites.EpsilonGammaBox`: z^B (box) rule with the input range [0, 1] at
    the first convolution, gamma rule (gamma 0.25) at the other convolutions, epsilon at linear layers.
``"epsilon_plus_flat"``
    :class:`~zennit.composites.EpsilonPlusFlat`: flat rule at the first layer, z+ at convolutions,
    epsilon at linear layers.
``"epsilon"``
    LRP-epsilon everywhere (convolutions, linear layers, average pooling, batch norm) with z^B at the
    first layer: the rules :func:`isnetflow.lrp.relevance` implements, so the two can be cross-checked.

Batch norm and the canonizer
----------------------------
LRP rules are defined for linear layers; a batch norm that directly follows a convolution is best
*merged* into it (a canonizer) so that the convolution's rule sees the true pre-activation. zennit's
``SequentialMergeBatchNorm`` decides what to merge by the *registration order* of leaf modules, which
is wrong for DenseNets: the leaf after a dense layer's last convolution is the next layer's ``norm1``,
but that batch norm normalizes the *concatenation* of all previous feature maps, not the convolution's
output (it fails with a shape error, or silently merges the wrong layers when shapes happen to match).

:class:`GraphMergeBatchNorm` instead traces the network with ``torch.fx`` and merges a batch norm into a
convolution/linear layer only when the graph proves that the batch norm's sole input is that layer's
output and that the output has no other consumer. In MONAI's DenseNet that merges ``conv0 -> norm0``
and every dense layer's ``conv1 -> norm2``; the batch norms after concatenations (each dense layer's
``norm1``, the transitions' ``norm`` and the final ``norm5``) stay, and the composites give them the
LRP-epsilon rule of an element-wise affine layer ``y = a*x + c`` (``R_x = x*a*R_y/stab(y)``), the same
treatment as :mod:`isnetflow.lrp` and the ISNet authors' code (zennit's default would be ``Pass``,
which ignores the batch norm's scale and shift). Networks that ``torch.fx`` cannot trace fall back to
no merging (every batch norm gets the epsilon rule), which is still a valid LRP.

The explained model is a deep copy with in-place ReLUs made out-of-place (zennit's backward hooks
and in-place operations do not mix); the caller's model is never modified.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, get_args

import numpy as np
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import MergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, SpecialFirstLayerMapComposite, layer_map_base
from zennit.core import Composite
from zennit.rules import Epsilon, ZBox
from zennit.types import AvgPool, BatchNorm, Convolution, Linear

from isnetflow.config import AuditComposite, AuditConfig

log = logging.getLogger(__name__)

__all__ = [
    "COMPOSITES",
    "CompositeName",
    "GraphMergeBatchNorm",
    "audit_relevance",
    "background_share",
    "explain",
    "explained_classes",
    "make_composite",
    "mergeable_batch_norms",
]

CompositeName = AuditComposite
COMPOSITES: tuple[str, ...] = get_args(AuditComposite)

_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def mergeable_batch_norms(model: nn.Module) -> list[tuple[str, str]]:
    """``(linear_name, batch_norm_name)`` pairs that can be merged, found from the ``torch.fx`` graph.

    A pair qualifies when the batch norm's only input is the linear layer's output and that output feeds
    nothing else. Returns ``[]`` (and logs why) when the model cannot be traced.
    """
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # any tracing failure means "do not merge"
        log.warning("torch.fx cannot trace %s (%s): no batch norm is merged", type(model).__name__, exc)
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), _BN):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module":
            continue
        if not isinstance(modules.get(str(prev.target)), _LINEAR) or len(prev.users) != 1:
            continue
        pairs.append((str(prev.target), str(node.target)))
    return pairs


class GraphMergeBatchNorm(MergeBatchNorm):
    """zennit canonizer merging only the batch norms that :func:`mergeable_batch_norms` proves safe.

    Merging needs the running statistics, so the model must be in eval mode.
    """

    def apply(self, root_module: nn.Module) -> list[MergeBatchNorm]:
        """Merge each safe (linear, batch norm) pair of ``root_module``; returns one canonizer per pair,
        whose ``remove`` undoes it. Raises :class:`ValueError` in training mode."""
        if root_module.training:
            raise ValueError("GraphMergeBatchNorm needs the model in eval mode (running statistics)")
        lookup = dict(root_module.named_modules())
        instances = []
        for linear_name, bn_name in mergeable_batch_norms(root_module):
            instance = self.copy()
            instance.register([lookup[linear_name]], lookup[bn_name])
            instances.append(instance)
        return instances


def make_composite(
    name: CompositeName, *, epsilon: float = 1e-6, gamma: float = 0.25, canonize: bool = True
) -> Composite:
    """One of :data:`COMPOSITES`; inputs are in [0, 1].

    ``canonize`` adds :class:`GraphMergeBatchNorm`; without it every batch norm gets the epsilon rule.
    """
    canonizers = [GraphMergeBatchNorm()] if canonize else []
    bn_rule: list[tuple[Any, Any]] = [(BatchNorm, Epsilon(epsilon=epsilon))]
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(
            low=0.0, high=1.0, epsilon=epsilon, gamma=gamma, layer_map=bn_rule, canonizers=canonizers
        )
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(epsilon=epsilon, layer_map=bn_rule, canonizers=canonizers)
    if name == "epsilon":
        layer_map = [
            *bn_rule,
            (AvgPool, Epsilon(epsilon=epsilon)),
            *layer_map_base(),
            (Convolution, Epsilon(epsilon=epsilon)),
            (Linear, Epsilon(epsilon=epsilon)),
        ]
        first_map = [(Convolution, ZBox(low=0.0, high=1.0))]
        return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map, canonizers=canonizers)
    raise ValueError(f"unknown composite {name!r}; choose one of {COMPOSITES}")


def _explainable_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).eval()
    for module in m.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    composite: CompositeName = "epsilon_gamma_box",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    batch_size: int = 16,
    num_threads: int = 0,
    canonize: bool = True,
) -> np.ndarray:
    """Relevance maps ``(N, 1, H, W)`` (float32) of the ``targets`` logits, computed with zennit.

    The output relevance is the target logit (one-hot times the logits), propagated with ``composite``.
    """
    if images.ndim != 4 or targets.shape != (images.shape[0],):
        raise ValueError(f"images must be (N, C, H, W) and targets (N,), got {images.shape}, {targets.shape}")
    m = _explainable_copy(model)
    device = next(m.parameters()).device
    comp = make_composite(composite, epsilon=epsilon, gamma=gamma, canonize=canonize)
    out: list[np.ndarray] = []
    with _threads(num_threads), Gradient(model=m, composite=comp) as attributor:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(device).float()
            t = targets[i : i + batch_size].to(device)
            with torch.no_grad():
                n_out = m(x[:1]).shape[1]
            seed = torch.nn.functional.one_hot(t, n_out).float()
            _, rel = attributor(x, lambda o, s=seed: o * s)
            out.append(rel.detach().cpu().float().numpy())
    if not out:
        return np.zeros(tuple(images.shape), dtype=np.float32)
    return np.concatenate(out)


def explained_classes(audit: AuditConfig, labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """The class whose logit the audit explains, per image (``audit.target``): the label or the predicted
    class (the argmax of ``proba``, ``(N, classes)``)."""
    return np.asarray(labels) if audit.target == "label" else np.asarray(proba).argmax(1)


def audit_relevance(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    audit: AuditConfig,
    *,
    batch_size: int = 16,
    num_threads: int = 0,
) -> np.ndarray:
    """The shortcut audit's relevance maps: :func:`explain` with ``audit``'s composite, epsilon and gamma.

    The one way model selection and the evaluation measure relevance, so that the selection limit and
    the background-share gate read the same yardstick.
    """
    return explain(
        model,
        images,
        targets,
        composite=audit.composite,
        epsilon=audit.epsilon,
        gamma=audit.gamma,
        batch_size=batch_size,
        num_threads=num_threads,
    )


def background_share(relevance: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: positive relevance outside the lung mask / all positive relevance (NaN if none).

    ``relevance`` and ``masks`` are ``(N, 1, H, W)`` or ``(N, H, W)``; mask values > 0.5 are lung.
    """
    r = np.clip(np.asarray(relevance, dtype=np.float64), 0, None).reshape(len(relevance), -1)
    lung = (np.asarray(masks) > 0.5).reshape(len(masks), -1)
    if r.shape != lung.shape:
        raise ValueError(f"relevance {relevance.shape} and masks {masks.shape} differ")
    total = r.sum(1)
    outside = (r * ~lung).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, outside / np.where(total > 0, total, 1.0), np.nan)
