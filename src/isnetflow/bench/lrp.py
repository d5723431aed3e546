"""``isnetflow bench training`` / ``isnetflow bench amp``: cost of an ISNet training step relative to a
standard training step, and how far the ISNet loss moves under autocast."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from isnetflow.isnet import ISNetLossConfig, isnet_objective
from isnetflow.nets import build_model

__all__ = ["amp_check", "step_times", "synthetic_batch"]


def synthetic_batch(
    batch: int, image_size: int, device: torch.device, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images ``(batch, 1, S, S)`` in [0, 1), random labels of two classes (both drawn from
    ``generator``) and the same lung-shaped mask for every image, all on ``device``."""
    images = torch.rand(batch, 1, image_size, image_size, generator=generator).to(device)
    labels = torch.randint(0, 2, (batch,), generator=generator).to(device)
    coords = torch.linspace(-1, 1, image_size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    lungs = ((xx.abs() - 0.45) ** 2 / 0.3**2 + yy**2 / 0.7**2 <= 1).float()
    masks = lungs.expand(batch, 1, image_size, image_size).contiguous().to(device)
    return images, labels, masks


def _timed(step: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def step_times(
    model_name: str,
    batch: int,
    image_size: int,
    device: str | torch.device = "cpu",
    steps: int = 3,
    config: ISNetLossConfig | None = None,
) -> dict[str, Any]:
    """Time a standard training step against an ISNet training step on the same network and batch.

    Standard step: forward, cross-entropy backward, SGD step. ISNet step: one instrumented forward, the
    variant's relevance maps with ``create_graph=True``, ISNet loss backward, SGD step (see
    :func:`isnetflow.isnet.isnet_objective`). Both run in training mode on a random synthetic batch with
    two classes and a fixed lung-shaped mask. After one warm-up step of each kind, ``steps`` standard
    and ``steps`` ISNet steps are timed *alternately* and the medians are reported, which keeps the ratio
    meaningful on a machine whose load changes during the measurement.

    Returns
    -------
    dict
        ``standard_step_s``, ``isnet_step_s`` (median seconds per step), ``ratio`` (ISNet / standard),
        ``device``, ``model``, ``batch``, ``image_size``, ``variant``, ``steps``, ``threads`` (CPU
        intra-op threads).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    dev = torch.device(device)
    cfg = config or ISNetLossConfig()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=2, in_channels=1).to(dev).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, labels, masks = synthetic_batch(batch, image_size, dev, gen)

    def standard() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def isnet() -> None:
        optimizer.zero_grad(set_to_none=True)
        isnet_objective(model, images, labels, masks, cfg, generator=gen).loss.backward()
        optimizer.step()

    _timed(standard, dev)
    _timed(isnet, dev)
    standard_times, isnet_times = [], []
    for _ in range(steps):
        standard_times.append(_timed(standard, dev))
        isnet_times.append(_timed(isnet, dev))
    standard_s = statistics.median(standard_times)
    isnet_s = statistics.median(isnet_times)
    return {
        "standard_step_s": standard_s,
        "isnet_step_s": isnet_s,
        "ratio": isnet_s / standard_s,
        "device": str(dev),
        "model": model_name,
        "batch": batch,
        "image_size": image_size,
        "variant": cfg.variant,
        "steps": steps,
        "threads": torch.get_num_threads(),
    }


def amp_check(
    model_name: str,
    batch: int,
    image_size: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    config: ISNetLossConfig | None = None,
) -> dict[str, Any]:
    """How far the ISNet loss, heatmaps and gradient move when the LRP pass runs under ``torch.autocast``.

    Computes one ISNet training step's loss and parameter gradient in float32 and again inside
    ``torch.autocast(dtype)`` with the float32 guard of :func:`isnetflow.isnet.explain_batch` lifted
    (``unguarded_*``) and kept (``guarded_*``, which must be 0). Errors are relative L2 norms against
    float32; ``grad_cosine`` is the cosine similarity of the two gradients.
    """
    dev = torch.device(device)
    cfg = config or ISNetLossConfig()
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=2, in_channels=1).to(dev).train()
    images, labels, masks = synthetic_batch(batch, image_size, dev, torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step(autocast: bool, allow: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
        model.load_state_dict(state)  # BN running statistics: every pass starts from the same state
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=autocast):
            out = isnet_objective(model, images, labels, masks, cfg, allow_autocast=allow)
        out.loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        assert out.heatmaps is not None
        return float(out.loss.detach()), out.heatmaps.detach().float(), grad

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    loss32, maps32, grad32 = step(False, False)
    result: dict[str, Any] = {
        "model": model_name,
        "batch": batch,
        "image_size": image_size,
        "device": str(dev),
        "autocast_dtype": str(dtype).replace("torch.", ""),
        "variant": cfg.variant,
    }
    for name, allow in (("unguarded", True), ("guarded", False)):
        loss, maps, grad = step(True, allow)
        result[f"{name}_loss_rel_err"] = abs(loss - loss32) / max(abs(loss32), 1e-30)
        result[f"{name}_heatmap_rel_err"] = rel(maps, maps32)
        result[f"{name}_grad_rel_err"] = rel(grad, grad32)
        result[f"{name}_grad_cosine"] = float(F.cosine_similarity(grad, grad32, dim=0))
    return result
