"""``isnetflow bench inference``: ISNet vs standard predict throughput for the same network and batch.

The ISNet adds its heatmap loss at training time only; at inference it is the same network, so the
expected ratio is 1.00. Measured through the served code path, :meth:`CXRClassifier.predict
<isnetflow.serving.model.CXRClassifier.predict>` (softmax probabilities as a DataFrame), on two
instances of the same architecture:

* ``isnet``: a network after ISNet training steps (:func:`isnetflow.isnet.isnet_objective`, the
  production objective, on a synthetic batch with a lung-shaped mask),
* ``standard``: the same architecture after cross-entropy steps,

so the two have different weights but the same graph. One call of a 16-image batch takes about 15 ms
on 2 cores, shorter than the machine's own jitter, so a *sample* is ``inner`` back-to-back calls
(calibrated after the warm-up so that a sample lasts at least ``min_sample_s``). ``repeats`` rounds
each time one sample of both networks, in ABBA order (the order flips every round, so a drifting
load favours neither); a round gives one ratio, and the reported ratio is the median over rounds with
its interquartile range, so a reader sees the noise next to the figure. The explanation on demand
(``params={"explain": True}``) is timed after the pair, as its cost relative to a plain ISNet predict.
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


def _time(fn: Callable[[], Any], inner: int = 1) -> float:
    """Seconds per call, over ``inner`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def _inner_calls(fn: Callable[[], Any], min_sample_s: float) -> int:
    """Calls per sample so that a sample lasts at least ``min_sample_s`` (at least 1)."""
    once = _time(fn, 3)
    return max(1, int(np.ceil(min_sample_s / max(once, 1e-6))))


def bench_inference(
    model: str = "densenet-small",
    batch: int = 16,
    image_size: int = 128,
    threads: int = 2,
    repeats: int = 21,
    train_steps: int = 2,
    explain: bool = True,
    min_sample_s: float = 0.25,
) -> dict[str, Any]:
    """Images/s of ``CXRClassifier.predict`` for an ISNet-trained and a standard-trained network."""
    from isnetflow.serving.model import EXPLAIN_PARAM, CXRClassifier

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
        pair: dict[str, Callable[[], Any]] = {
            mode: functools.partial(w.predict, None, x) for mode, w in wrappers.items()
        }
        for fn in pair.values():
            fn()  # warm-up
        inner = max(_inner_calls(fn, min_sample_s) for fn in pair.values())
        times: dict[str, list[float]] = {k: [] for k in pair}
        ratios: list[float] = []
        for r in range(repeats):
            order = ("isnet", "standard") if r % 2 == 0 else ("standard", "isnet")
            sample = {k: _time(pair[k], inner) for k in order}
            for k, t in sample.items():
                times[k].append(t)
            ratios.append(sample["standard"] / sample["isnet"])
        explain_times: list[float] = []
        if explain:
            explain_fn = functools.partial(wrappers["isnet"].predict, None, x, params={EXPLAIN_PARAM: True})
            explain_fn()  # warm-up
            explain_inner = _inner_calls(explain_fn, min_sample_s)
            explain_times = [_time(explain_fn, explain_inner) for _ in range(max(3, repeats // 3))]
    finally:
        torch.set_num_threads(old_threads)
    median = {k: statistics.median(v) for k, v in times.items()}
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    result: dict[str, Any] = {
        "model": model,
        "batch": batch,
        "image_size": image_size,
        "threads": threads or old_threads,
        "repeats": repeats,
        "calls_per_sample": inner,
        "isnet_images_per_s": round(batch / median["isnet"], 2),
        "standard_images_per_s": round(batch / median["standard"], 2),
        "isnet_over_standard_ratio": round(statistics.median(ratios), 3),
        "ratio_iqr": [round(q1, 3), round(q3, 3)],
        "isnet_batch_ms": round(1000 * median["isnet"], 2),
        "standard_batch_ms": round(1000 * median["standard"], 2),
    }
    if explain:
        explain_s = statistics.median(explain_times)
        result["explain_images_per_s"] = round(batch / explain_s, 2)
        result["explain_cost_vs_predict"] = round(explain_s / median["isnet"], 2)
    return result
