"""Model factory for the classifiers trained by isnetflow.

Every network built here consists only of layers that :mod:`isnetflow.lrp` knows how to explain
(convolutions, linear layers, batch norm, ReLU, max/average pooling, flatten, concatenation), so that
:func:`isnetflow.lrp.relevance` and the ISNet loss work on all of them.

Registered names (see :data:`NETS`):

``"densenet121"``
    MONAI ``DenseNet121`` (2-D) -- the architecture used by the ISNet paper for chest X-rays.
``"densenet-small"``
    MONAI ``DenseNet`` with ``init_features=16, growth_rate=8, block_config=(2, 2, 2, 2), bn_size=4``:
    same layer types and topology as DenseNet121 (pre-activation BN, concatenation, max-pool stem,
    average-pool transitions, adaptive average pool head), about 27k parameters; fast enough for 128 px
    images on a CPU.
``"densenet-medium"``
    The same with ``init_features=32, growth_rate=16`` (about 104k parameters, about twice the training time
    of ``densenet-small`` on a CPU): more capacity for a subtle disease, but not reliably better on the
    tuning cohorts (docs/robustness.md), so not the default.
``"cnn-small"``
    A plain ``Conv-BN-ReLU-MaxPool`` stack (16/32/64 channels) with an adaptive average pool and a linear
    head; the cheapest option, useful for smoke tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.networks.nets import DenseNet, DenseNet121
from torch import nn
from tqdm import tqdm

__all__ = ["MIDDLE_LAYERS", "NETS", "build_model", "predict_proba"]


def _densenet121(num_classes: int, in_channels: int) -> nn.Module:
    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes)


def _densenet(num_classes: int, in_channels: int, init_features: int, growth_rate: int) -> nn.Module:
    """MONAI 2-D DenseNet with four 2-layer dense blocks (the small CPU variants)."""
    return DenseNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=(2, 2, 2, 2),
        bn_size=4,
    )


def _densenet_small(num_classes: int, in_channels: int) -> nn.Module:
    return _densenet(num_classes, in_channels, init_features=16, growth_rate=8)


def _densenet_medium(num_classes: int, in_channels: int) -> nn.Module:
    return _densenet(num_classes, in_channels, init_features=32, growth_rate=16)


def _cnn_small(num_classes: int, in_channels: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = in_channels
    for i, width in enumerate((16, 32, 64)):
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        if i < 2:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes)]
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


NETS: dict[str, Callable[[int, int], nn.Module]] = {
    "densenet121": _densenet121,
    "densenet-small": _densenet_small,
    "densenet-medium": _densenet_medium,
    "cnn-small": _cnn_small,
}
"""Registry of model builders: name -> ``builder(num_classes, in_channels)``."""

MIDDLE_LAYERS: dict[str, str] = {
    "densenet121": "features.transition2",
    "densenet-small": "features.transition2",
    "densenet-medium": "features.transition2",
    "cnn-small": "7",
}
"""Per net of :data:`NETS`: the module whose output is its middle feature map (after the second of the
DenseNets' four dense blocks, 1/16 of the input's side; after ``cnn-small``'s second block), the default
layer of the teacher's spatial distillation (``train.distill.map_layer``); a net without an entry
distils its last feature map."""


def build_model(name: str, num_classes: int, in_channels: int = 1) -> nn.Module:
    """Build a freshly initialised classifier by registry name.

    Parameters
    ----------
    name
        One of the keys of :data:`NETS` (``"densenet121"``, ``"densenet-small"``, ``"densenet-medium"``,
        ``"cnn-small"``).
    num_classes
        Number of output logits (``>= 2``; the ISNet loss uses a softmax / cross-entropy head).
    in_channels
        Number of image channels (1 for grey-scale X-rays).

    Returns
    -------
    torch.nn.Module
        The network in training mode, float32, on the CPU. Its output is a ``(batch, num_classes)`` tensor
        of logits.

    Raises
    ------
    KeyError
        If ``name`` is not registered.
    ValueError
        If ``num_classes < 2`` or ``in_channels < 1``.
    """
    if name not in NETS:
        raise KeyError(f"unknown model {name!r}; available: {sorted(NETS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return NETS[name](num_classes, in_channels)


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor | np.ndarray, *, batch_size: int, progress: bool = False
) -> np.ndarray:
    """Class probabilities ``(N, classes)`` of a classifier: float32, in eval mode, on the model's device.

    The images go in batches of ``batch_size`` as float32, and the softmax is taken of float32 logits.
    The one prediction of training's validation, the evaluation and the served model: a caller that keeps
    float64 probabilities converts the result (exact). The batch size is the caller's (validation 64,
    the evaluation ``evaluate.batch_size``, the served model its packaged one): on a CPU the batch can
    change the last bits of a logit, so each caller keeps its own. ``progress`` shows a tqdm bar.
    """
    model.eval()
    x_all = torch.as_tensor(images)
    device = next(model.parameters()).device
    n = int(x_all.shape[0])
    out = []
    for i in tqdm(range(0, n, batch_size), desc="predict", unit="batch", disable=not progress, leave=False):
        logits = model(x_all[i : i + batch_size].to(device).float())
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    if not out:
        n_classes = int(model(torch.zeros(1, *x_all.shape[1:], device=device)).shape[1])
        return np.zeros((0, n_classes), dtype=np.float32)
    return torch.cat(out).numpy()
