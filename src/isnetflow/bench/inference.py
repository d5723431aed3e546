"""``isnetflow bench inference``: ISNet vs standard predict throughput for the same network and batch.

The ISNet adds its heatmap loss at training time only; at inference it is the same network, so the
expected ratio is 1.00. Measured through the served code path, :meth:`CXRClassifier.predict
<isnetflow.registry.packaging.CXRClassifier.predict>` (softmax probabilities as a DataFrame), on two
instances of the same architecture:

* ``isnet``: a network after ISNet training steps (:func:`isnetflow.isnet.isnet_objective`, the
  production objective, on a synthetic batch with a lung-shaped mask),
* ``standard``: the same architecture after cross-entropy steps,

so the two have different weights but the same graph. After a warm-up call each, ``repeats`` calls of
each are timed alternately (robust to a machine whose load changes) and the medians reported. The
explanation on demand (``params={"explain": True}``) is timed too, as its cost relative to a plain
predict of the ISNet.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bench_inference"]


def _trained(model_name: str, mode: str, image_size: int, steps: int, seed: int) -> torch.nn.Module:
    from isnetflow.isnet import ISNetLossConfig, isnet_objective
    from isnetflow.nets import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, 2)
    g = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-1, 1, image_size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    lungs = ((xx.abs() - 0.45) ** 2 / 0.3**2 + yy**2 / 0.7**2 <= 1).float()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        x = torch.rand(4, 1, image_size, image_size, generator=g)
        y = torch.randint(0, 2, (4,), generator=g)
        opt.zero_grad()
        if mode == "isnet":
            masks = lungs.expand(4, 1, image_size, image_size).contiguous()
            loss = isnet_objective(model, x, y, masks, ISNetLossConfig(), generator=g).loss
        else:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_inference(
    model: str = "densenet-small",
    batch: int = 16,
    image_size: int = 128,
    threads: int = 2,
    repeats: int = 7,
    train_steps: int = 2,
    explain: bool = True,
) -> dict[str, Any]:
    """Images/s of ``CXRClassifier.predict`` for an ISNet-trained and a standard-trained network."""
    from isnetflow.registry.packaging import EXPLAIN_PARAM, CXRClassifier

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        wrappers = {}
        for mode in ("isnet", "standard"):
            w = CXRClassifier(["normal", "positive"], image_size, batch_size=batch)
            w.module = _trained(model, mode, image_size, train_steps, seed=0 if mode == "isnet" else 1)
            wrappers[mode] = w
        x = np.random.default_rng(0).random((batch, 1, image_size, image_size), dtype=np.float32)
        calls: dict[str, Callable[[], Any]] = {
            mode: functools.partial(w.predict, None, x) for mode, w in wrappers.items()
        }
        if explain:
            calls["isnet_explain"] = functools.partial(
                wrappers["isnet"].predict, None, x, params={EXPLAIN_PARAM: True}
            )
        for fn in calls.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(repeats):
            for k, fn in calls.items():
                times[k].append(_time(fn))
    finally:
        torch.set_num_threads(old_threads)
    median = {k: statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "model": model,
        "batch": batch,
        "image_size": image_size,
        "threads": threads or old_threads,
        "repeats": repeats,
        "isnet_images_per_s": round(batch / median["isnet"], 2),
        "standard_images_per_s": round(batch / median["standard"], 2),
        "isnet_over_standard_ratio": round(median["standard"] / median["isnet"], 3),
        "isnet_batch_ms": round(1000 * median["isnet"], 2),
        "standard_batch_ms": round(1000 * median["standard"], 2),
    }
    if explain:
        result["explain_images_per_s"] = round(batch / median["isnet_explain"], 2)
        result["explain_cost_vs_predict"] = round(median["isnet_explain"] / median["isnet"], 2)
    return result
